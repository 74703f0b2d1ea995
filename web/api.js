//! api.js: the dashboard's only door to fitd: JSON calls, problem+json errors in words, uploads with progress.

/** An HTTP error carrying the RFC 9457 problem body when the server sent one. */
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    const title = problem?.title || fallback || `HTTP ${status}`;
    const detail = problem?.detail ? `: ${problem.detail}` : '';
    super(`${title}${detail}`);
    this.status = status;
    this.problem = problem || null;
    this.fieldErrors = Array.isArray(problem?.errors) ? problem.errors : [];
  }
}

async function problemOf(res) {
  const type = res.headers.get('content-type') || '';
  try {
    if (type.includes('json')) return await res.json();
    const text = await res.text();
    return text ? { title: res.statusText || `HTTP ${res.status}`, detail: text.slice(0, 300) } : null;
  } catch {
    return null;
  }
}

function networkError(err) {
  return new ApiError(0, { title: 'The server could not be reached', detail: String(err?.message || err) });
}

/** Calls the API; JSON in and out. Returns {status, body, headers}. */
export async function request(method, path, { body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw networkError(err);
  }
  if (res.status === 401 && path !== '/v1/session') window.dispatchEvent(new CustomEvent('fitd:signin'));
  if (!res.ok && res.status !== 304) throw new ApiError(res.status, await problemOf(res), res.statusText);
  if (raw) return res;
  const type = res.headers.get('content-type') || '';
  let data = null;
  if (res.status !== 204 && res.status !== 304) {
    data = type.includes('json') ? await res.json() : await res.text();
  }
  return { status: res.status, body: data, headers: res.headers };
}

export const get = async (path, opts) => (await request('GET', path, opts)).body;
export const post = async (path, body, opts) => request('POST', path, { ...opts, body });
export const del = async (path) => request('DELETE', path);
export const patch = async (path, body) => request('PATCH', path, { body });
export const put = async (path, body) => request('PUT', path, { body });

/** Reads every page of a list endpoint (`{items, next}`), up to `max` items. */
export async function listAll(path, max = 500) {
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const url = `${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`;
    const page = await get(url);
    const batch = Array.isArray(page) ? page : page?.items || [];
    items.push(...batch);
    after = Array.isArray(page) ? null : page?.next;
    if (!after || items.length >= max || batch.length === 0) return items;
  }
}

/**
 * POSTs a FormData with XMLHttpRequest, because fetch cannot report upload progress.
 * onProgress(fraction | null) is called as bytes leave the browser (null when the size is unknown).
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => onProgress?.(e.lengthComputable ? e.loaded / e.total : null);
    xhr.onerror = () => reject(networkError('upload failed before the server answered'));
    xhr.onabort = () => reject(networkError('upload cancelled'));
    xhr.onload = () => {
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = { title: xhr.statusText, detail: xhr.responseText.slice(0, 300) };
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ status: xhr.status, body: data, location: xhr.getResponseHeader('Location') });
      } else {
        reject(new ApiError(xhr.status, data, xhr.statusText));
      }
    };
    xhr.send(form);
  });
}

/** The last path segment of a Location header, i.e. the new resource's id. */
export function idFromLocation(location) {
  if (!location) return null;
  return location.replace(/\/+$/, '').split('/').pop();
}
