-- Claims with leases, so a job whose worker died is taken over, and per-job event counters, so
-- concurrent writers number events without racing on MAX(seq).
ALTER TABLE jobs ADD COLUMN worker TEXT;            -- the worker holding the claim: "<node>/<n>"
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER; -- Unix ms the claim lasts unless renewed
ALTER TABLE jobs ADD COLUMN last_event_seq INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET last_event_seq = COALESCE((SELECT MAX(e.seq) FROM job_events e WHERE e.job_id = jobs.id), 0);
CREATE INDEX jobs_status_lease ON jobs (status, lease_until_ms);

ALTER TABLE searches ADD COLUMN last_event_seq INTEGER NOT NULL DEFAULT 0;
UPDATE searches SET last_event_seq =
    COALESCE((SELECT MAX(e.seq) FROM search_events e WHERE e.search_id = searches.id), 0);
