//! tokens.js: signing in with an API token, and the admins' Tokens page (create, list, revoke).
//
// The token is typed into a password field and sent once in a JSON body to POST /v1/session; the
// server answers with an HttpOnly session cookie, so the token never lands in a URL, the page's
// storage or a log, and EventSource streams are authenticated by the cookie.

import { del, get, post } from './api.js';
import { clear, field, fmtDate, h, message, table } from './dom.js';

const SCOPES = ['read', 'train', 'predict', 'admin'];

/** The sign-in form; `done()` runs once the session cookie is set. */
export function signInPage(root, done) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, 'data-testid': 'signin-token' });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h(
    'form',
    {
      'data-testid': 'signin-form',
      async onsubmit(ev) {
        ev.preventDefault();
        clear(status);
        try {
          await post('/v1/session', { token: input.value });
          input.value = '';
          await done();
        } catch (err) {
          clear(status, message('error', err));
        }
      },
    },
    field('API token', input, 'Created with `fitd token create` or by an admin; it is sent once and kept as a session cookie.'),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  clear(root, h('h1', {}, 'Sign in'), h('p', { class: 'muted' }, 'This fitd server needs an API token.'), form);
}

/** The admins' page: every token, a form to create one (shown once), revoke buttons. */
export async function tokensPage(root) {
  const list = h('div', { 'data-testid': 'tokens-list' }, h('p', { class: 'muted' }, 'Loading tokens…'));
  const created = h('div', { 'data-testid': 'token-created', 'aria-live': 'polite' });
  const name = h('input', { name: 'name', required: true, maxlength: 200 });
  const boxes = SCOPES.map((s) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'scope', value: s, checked: s === 'read' }), ` ${s}`));
  async function refresh() {
    try {
      const { items } = await get('/v1/tokens');
      if (!items.length) {
        clear(list, h('p', { class: 'muted' }, 'No tokens: the server is open until one exists.'));
        return;
      }
      clear(
        list,
        table(
          ['Name', 'Prefix', 'Scopes', 'Created', 'Revoked', ''],
          items.map((t) =>
            h(
              'tr',
              { 'data-id': t.id },
              h('td', {}, t.name),
              h('td', {}, h('code', {}, `${t.prefix}…`)),
              h('td', {}, t.scopes.join(', ')),
              h('td', {}, fmtDate(t.created_at)),
              h('td', {}, t.revoked_at ? fmtDate(t.revoked_at) : '–'),
              h(
                'td',
                {},
                t.revoked_at
                  ? null
                  : h(
                      'button',
                      {
                        type: 'button',
                        class: 'danger',
                        async onclick() {
                          try {
                            await del(`/v1/tokens/${encodeURIComponent(t.id)}`);
                            await refresh();
                          } catch (err) {
                            clear(created, message('error', err));
                          }
                        },
                      },
                      'Revoke',
                    ),
              ),
            ),
          ),
          { class: 'stack' },
        ),
      );
    } catch (err) {
      clear(list, message('error', err));
    }
  }
  const form = h(
    'form',
    {
      'data-testid': 'token-form',
      async onsubmit(ev) {
        ev.preventDefault();
        clear(created);
        const scopes = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        try {
          const { body } = await post('/v1/tokens', { name: name.value, scopes });
          clear(
            created,
            message('ok', h('span', {}, `Token “${body.name}” created. Copy it now: it is not shown again. `, h('code', { 'data-testid': 'new-token' }, body.token))),
          );
          name.value = '';
          await refresh();
        } catch (err) {
          clear(created, message('error', err));
        }
      },
    },
    field('Name', name),
    h('fieldset', {}, h('legend', {}, 'Scopes'), boxes),
    h('button', { type: 'submit' }, 'Create token'),
  );
  clear(root, h('h1', {}, 'API tokens'), form, created, list);
  await refresh();
}
