// The logger the core depends on: the pino methods it calls, nothing HTTP.
import type { LogFn } from 'pino'

export interface Logger {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
  fatal: LogFn
}
