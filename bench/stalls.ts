// Stall trace (not a test): reads V8 CPU profiles (node --cpu-prof, e.g. a tail phase run
// with BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR") and lists the longest
// stretches in which a thread never went idle, each with where its time went: the
// frames of this repository (src/, routes/) that held the most samples in it, by self
// and by total time. On the event loop such a stretch is a stall: every request waits
// for it. Run: npx tsx bench/stalls.ts DIR_OR_FILE... [--min-ms 20] [--top 12]
// (STALLS_FROM_S=S: only what started S seconds or more after the profile did, past start-up)
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
interface Profile {
  nodes: Node[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
}

const { values, positionals } = parseArgs({ options: { 'min-ms': { type: 'string' }, top: { type: 'string' } }, allowPositionals: true })
const minMs = Number(values['min-ms'] ?? '20')
const top = Number(values.top ?? '12')
const files = positionals.flatMap((p) => (statSync(p).isDirectory() ? readdirSync(p).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(p, f)) : [p]))
const idleNames = new Set(['(idle)', '(program)'])

for (const file of files) {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const label = (n: Node): string => {
    const url = n.callFrame.url.replace(/^file:\/\/.*?\/(src|routes|node_modules)\//, '$1/')
    return `${n.callFrame.functionName || '(anonymous)'} ${url}:${n.callFrame.lineNumber + 1}`
  }
  const ours = (n: Node): boolean => /\/(src|routes)\//.test(n.callFrame.url)
  // Stretches of consecutive non-idle samples.
  type Stretch = { startUs: number; us: number; samples: Array<{ id: number; us: number }> }
  const stretches: Stretch[] = []
  let t = prof.startTime
  let cur: Stretch | null = null
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0
    const d = prof.timeDeltas[i + 1] ?? 0
    const n = byId.get(prof.samples[i]!)!
    if (idleNames.has(n.callFrame.functionName)) {
      if (cur) stretches.push(cur)
      cur = null
      continue
    }
    cur ??= { startUs: t, us: 0, samples: [] }
    cur.us += d
    cur.samples.push({ id: n.id, us: d })
  }
  if (cur) stretches.push(cur)
  const totalUs = prof.timeDeltas.reduce((a, b) => a + b, 0)
  const fromS = Number(process.env['STALLS_FROM_S'] ?? '0')
  const long = stretches.filter((s) => s.us >= minMs * 1000 && s.startUs - prof.startTime >= fromS * 1e6).sort((a, b) => b.us - a.us)
  console.log(`\n== ${file}: ${(totalUs / 1e6).toFixed(1)} s profiled, ${long.length} stretches ≥ ${minMs} ms without idle`)
  for (const s of long.slice(0, top)) {
    const self = new Map<string, number>()
    const total = new Map<string, number>()
    for (const smp of s.samples) {
      const leaf = byId.get(smp.id)!
      self.set(label(leaf), (self.get(label(leaf)) ?? 0) + smp.us)
      const seen = new Set<string>()
      for (let id: number | undefined = smp.id; id !== undefined; id = parent.get(id)) {
        const n = byId.get(id)!
        if (!ours(n)) continue
        const l = label(n)
        if (seen.has(l)) continue
        seen.add(l)
        total.set(l, (total.get(l) ?? 0) + smp.us)
      }
    }
    const fmt = (m: Map<string, number>, k: number) =>
      [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([l, us]) => `      ${(us / 1000).toFixed(1).padStart(7)} ms  ${l}`).join('\n')
    console.log(`  ${(s.us / 1000).toFixed(1)} ms at +${((s.startUs - prof.startTime) / 1e6).toFixed(2)} s`)
    console.log(`    self:\n${fmt(self, 5)}`)
    console.log(`    ours (total):\n${fmt(total, 8)}`)
  }
}

// Where a whole thread's busy time went (self time by function), past its start-up.
for (const file of files) {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map<string, number>()
  let t = 0
  let busy = 0
  const fromUs = Number(process.env['STALLS_FROM_S'] ?? '0') * 1e6
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0
    if (t < fromUs) continue
    const n = byId.get(prof.samples[i]!)!
    if (idleNames.has(n.callFrame.functionName)) continue
    const d = prof.timeDeltas[i + 1] ?? 0
    busy += d
    const l = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^file:\/\/.*?\/(src|routes|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`
    self.set(l, (self.get(l) ?? 0) + d)
  }
  console.log(`\n== ${file}: busy ${(busy / 1e6).toFixed(2)} s of ${((t - fromUs) / 1e6).toFixed(1)} s from +${fromUs / 1e6} s; self time:`)
  for (const [l, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top * 2)) console.log(`  ${(us / 1000).toFixed(0).padStart(6)} ms  ${l}`)
}
