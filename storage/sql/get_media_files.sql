SELECT path, size, mtime_ns, sha256, probe FROM media_files
