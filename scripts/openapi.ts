// Regenerates openapi.yaml from the route schemas: `npm run openapi`.
// test/openapi.test.ts fails when the committed file differs from this output.

import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { generateOpenApiYaml } from '../test/support/openapi.js'

const target = fileURLToPath(new URL('../openapi.yaml', import.meta.url))
await writeFile(target, await generateOpenApiYaml())
process.stdout.write(`wrote ${target}\n`)
