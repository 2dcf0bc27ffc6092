// Small pieces the benches share: option parsing errors, numeric options, /proc readings.
import { readFileSync } from 'node:fs'

/** A bad command-line option or BENCH_* variable: printed without a stack. */
export class UsageError extends Error {}

/** `--name` (or the env variable), a number within min..max, else `fallback` when unset. */
export function numberOption(name: string, cli: string | undefined, envName: string, fallback: number, min: number, max: number, integer: boolean): number {
  const raw = cli ?? process.env[envName]
  if (raw === undefined || raw === '') return fallback
  const v = Number(raw)
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new UsageError(`--${name} (or ${envName}) must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}, got "${raw}"`)
  }
  return v
}

/** Resident memory of a process in MiB, or undefined once it is gone. */
export function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

/** Runs a bench's main: exits with its code, or prints the failure under the bench's name and exits 2. */
export function runMain(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
      process.exit(2)
    },
  )
}
