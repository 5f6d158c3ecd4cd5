-- Claims are owned by leases (0010); the process ids they also recorded were written and
-- never read. Dropped so that no code can come to rely on a local process id again.
ALTER TABLE archive_jobs DROP COLUMN owner_pid;
ALTER TABLE backup_queue DROP COLUMN owner_pid;
ALTER TABLE volumes DROP COLUMN owner_pid;
