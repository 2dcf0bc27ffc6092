// Imported first by server.ts: libuv's thread pool is sized on first use, and
// DuckDB's async calls, fs and zlib all share it. Four threads (the default)
// let a burst of queries starve commits; give the pool room unless told otherwise.
process.env.UV_THREADPOOL_SIZE ??= '16'
export {}
