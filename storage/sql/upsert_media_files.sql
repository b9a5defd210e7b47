INSERT INTO media_files
SELECT path, size, mtime_ns, sha256, probe FROM probed
ON CONFLICT (path) DO UPDATE SET
    size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
    probe = excluded.probe
