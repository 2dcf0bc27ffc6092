// An ingest worker module that fails while loading: for decoder.test.ts, to prove
// that a worker that cannot start leaves decoding to the event loop.
throw new Error('this worker cannot start')
