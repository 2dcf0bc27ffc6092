// The service version, read once from package.json.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
function findVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      return (require(rel) as { version: string }).version
    } catch {
      // compiled output lives one level deeper (dist/src)
    }
  }
  return '0.0.0'
}
export const VERSION = findVersion()
