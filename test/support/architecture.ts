// The architecture rules the code must keep, as findings a test (test/architecture.test.ts)
// and a script (scripts/check-architecture.ts) both report, from this one implementation:
//
// - No import cycle among the .ts files of src/ and routes/. Every relative import counts:
//   `import`, `import type`, `export … from`, `import x = require(…)`, `import(…)` and
//   `import('…').T` in a type, so a type-only cycle is a cycle too (it still ties the
//   modules together for a reader). NodeNext specifiers (`./x.js`) resolve to the `.ts`
//   file beside them. A relative import that resolves to no file is a finding as well,
//   so a resolver slip cannot hide an edge.
// - No file in src/ over `linesMax` lines unless its header (the first comment block:
//   the comments before the first token, up to the first blank line) has a line starting
//   `Over 500 lines:` followed by the reason.
//
// Imports are read with the TypeScript parser (a syntax walk, not the type checker), so
// the check is quick and needs no tsconfig. Each cycle is listed once, starting at its
// alphabetically first file; a cycle tangle is listed per strongly connected component,
// its cycles enumerated up to `cyclesPerComponentMax`.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import ts from 'typescript'

/** The most lines a file in src/ may have without a reason in its header. */
export const linesMax = 500
export const longFileMarker = 'Over 500 lines:'
/** Folders (from the repository root) whose files are in the import graph. */
export const graphRoots = ['src', 'routes'] as const
/** Folders whose files must keep to `linesMax`. */
export const lengthRoots = ['src'] as const
/** Bound on the cycles listed per strongly connected component. */
const cyclesPerComponentMax = 50
/** Bound on the steps of the search for them (the search is exponential in the worst case). */
const cycleSearchStepsMax = 1_000_000
/** Bound on the files read (a runaway tree, a symlink loop). */
const filesMax = 10_000

export interface ImportEdge {
  /** Importing and imported file, relative to the root, with forward slashes. */
  from: string
  to: string
  /** Every import of `to` in `from` is type-only (erased from the emitted JavaScript). */
  typeOnly: boolean
}

export interface Cycle {
  /** Files in import order; the last imports the first. */
  files: string[]
  /** typeOnly[i]: the edge files[i] → files[(i + 1) % n] is type-only. */
  typeOnly: boolean[]
}

export interface CycleComponent {
  /** The files of one strongly connected component (two or more, or one importing itself), sorted. */
  files: string[]
  cycles: Cycle[]
  /** The enumeration stopped at a bound: there are more cycles than listed. */
  truncated: boolean
}

export interface LongFile {
  file: string
  lines: number
}

export interface UnresolvedImport {
  file: string
  specifier: string
}

export interface ArchitectureFindings {
  files: number
  edges: number
  components: CycleComponent[]
  longFiles: LongFile[]
  unresolved: UnresolvedImport[]
}

const toPosix = (p: string): string => p.split(path.sep).join('/')

/** The .ts files (not .d.ts) below `dir`, sorted, relative to `root`. */
function listTsFiles(root: string, dir: string, out: string[]): void {
  const abs = path.join(root, dir)
  if (!existsSync(abs)) return
  for (const name of readdirSync(abs).sort()) {
    const rel = path.join(dir, name)
    const st = statSync(path.join(root, rel))
    if (st.isDirectory()) listTsFiles(root, rel, out)
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(toPosix(rel))
    if (out.length > filesMax) throw new Error(`more than ${filesMax} files under ${dir}: not a source tree?`)
  }
}

interface RawImport {
  specifier: string
  typeOnly: boolean
}

function isTypeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause
  if (clause === undefined) return false // `import './x.js'`: run for its effects
  if (clause.isTypeOnly) return true
  if (clause.name !== undefined) return false
  const bindings = clause.namedBindings
  // `import { type A, type B } from …` is erased too; `import {} from …` is not.
  return bindings !== undefined && ts.isNamedImports(bindings) && bindings.elements.length > 0 && bindings.elements.every((e) => e.isTypeOnly)
}

function isTypeOnlyExport(node: ts.ExportDeclaration): boolean {
  if (node.isTypeOnly) return true
  const clause = node.exportClause
  return clause !== undefined && ts.isNamedExports(clause) && clause.elements.length > 0 && clause.elements.every((e) => e.isTypeOnly)
}

/** Every module specifier of a file, from a syntax walk. */
export function readImports(fileName: string, text: string): RawImport[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const found: RawImport[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: isTypeOnlyImport(node) })
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: isTypeOnlyExport(node) })
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) {
      found.push({ specifier: node.moduleReference.expression.text, typeOnly: node.isTypeOnly })
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments[0]
      if (arg !== undefined && ts.isStringLiteralLike(arg)) found.push({ specifier: arg.text, typeOnly: false })
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push({ specifier: node.argument.literal.text, typeOnly: true })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return found
}

/**
 * The file a relative specifier names, relative to the root: `./x.js` → `x.ts` (NodeNext),
 * `./x.ts`, `./x` → `x.ts` or `x/index.ts`. undefined when no file exists.
 */
function resolveRelative(root: string, fromFile: string, specifier: string): string | undefined {
  const target = path.join(path.dirname(fromFile), specifier)
  const candidates: string[] = []
  const ext = path.extname(target)
  if (ext === '.js') candidates.push(`${target.slice(0, -3)}.ts`)
  else if (ext === '.mjs') candidates.push(`${target.slice(0, -4)}.mts`)
  else if (ext === '.cjs') candidates.push(`${target.slice(0, -4)}.cts`)
  else if (ext === '') candidates.push(`${target}.ts`, path.join(target, 'index.ts'))
  candidates.push(target)
  for (const c of candidates) {
    const abs = path.join(root, c)
    if (existsSync(abs) && statSync(abs).isFile()) return toPosix(path.normalize(c))
  }
  return undefined
}

/** The import graph of the files under `roots`: edges between those files only. */
export function importGraph(root: string, roots: readonly string[] = graphRoots): { files: string[]; edges: ImportEdge[]; unresolved: UnresolvedImport[] } {
  const files: string[] = []
  for (const r of roots) listTsFiles(root, r, files)
  const inGraph = new Set(files)
  const edges = new Map<string, ImportEdge>()
  const unresolved: UnresolvedImport[] = []
  for (const file of files) {
    for (const imp of readImports(file, readFileSync(path.join(root, file), 'utf8'))) {
      if (!imp.specifier.startsWith('./') && !imp.specifier.startsWith('../')) continue // a package
      const to = resolveRelative(root, file, imp.specifier)
      if (to === undefined) {
        unresolved.push({ file, specifier: imp.specifier })
        continue
      }
      if (!inGraph.has(to)) continue // outside src/ and routes/ (e.g. package.json)
      const key = `${file}\0${to}`
      const prev = edges.get(key)
      edges.set(key, { from: file, to, typeOnly: (prev?.typeOnly ?? true) && imp.typeOnly })
    }
  }
  return { files, edges: [...edges.values()], unresolved }
}

/** Strongly connected components (Tarjan), each with a cycle: two or more files, or a file importing itself. */
function cyclicComponents(files: string[], next: Map<string, string[]>): string[][] {
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: string[] = []
  const out: string[][] = []
  let counter = 0
  // Iterative, so a long import chain cannot overflow the call stack.
  for (const startFile of files) {
    if (index.has(startFile)) continue
    const work: { file: string; i: number }[] = [{ file: startFile, i: 0 }]
    index.set(startFile, counter)
    low.set(startFile, counter++)
    stack.push(startFile)
    onStack.add(startFile)
    while (work.length > 0) {
      const top = work[work.length - 1]!
      const succ = next.get(top.file) ?? []
      if (top.i < succ.length) {
        const w = succ[top.i++]!
        if (!index.has(w)) {
          index.set(w, counter)
          low.set(w, counter++)
          stack.push(w)
          onStack.add(w)
          work.push({ file: w, i: 0 })
        } else if (onStack.has(w)) {
          low.set(top.file, Math.min(low.get(top.file)!, index.get(w)!))
        }
        continue
      }
      work.pop()
      const parent = work[work.length - 1]
      if (parent !== undefined) low.set(parent.file, Math.min(low.get(parent.file)!, low.get(top.file)!))
      if (low.get(top.file) === index.get(top.file)) {
        const component: string[] = []
        for (;;) {
          const w = stack.pop()!
          onStack.delete(w)
          component.push(w)
          if (w === top.file) break
        }
        if (component.length > 1 || (next.get(top.file) ?? []).includes(top.file)) out.push(component.sort())
      }
    }
  }
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!))
}

/** The elementary cycles within one component, each from its alphabetically first file, bounded. */
function componentCycles(component: string[], next: Map<string, string[]>, typeOnly: Map<string, boolean>): { cycles: Cycle[]; truncated: boolean } {
  const members = new Set(component)
  const cycles: Cycle[] = []
  let steps = 0
  let truncated = false
  const toCycle = (files: string[]): Cycle => ({ files, typeOnly: files.map((f, i) => typeOnly.get(`${f}\0${files[(i + 1) % files.length]}`) ?? false) })
  // From each start, only files after it: each cycle is found once, from its first file.
  for (const start of component) {
    const path: string[] = [start]
    const onPath = new Set([start])
    const walk = (file: string): void => {
      for (const w of next.get(file) ?? []) {
        if (truncated) return
        if (++steps > cycleSearchStepsMax) {
          truncated = true
          return
        }
        if (!members.has(w) || w < start) continue
        if (w === start) {
          if (cycles.length >= cyclesPerComponentMax) {
            truncated = true
            return
          }
          cycles.push(toCycle([...path]))
        } else if (!onPath.has(w)) {
          path.push(w)
          onPath.add(w)
          walk(w)
          onPath.delete(w)
          path.pop()
        }
      }
    }
    walk(start)
    if (truncated) break
  }
  cycles.sort((a, b) => a.files.length - b.files.length || a.files.join(' ').localeCompare(b.files.join(' ')))
  return { cycles, truncated }
}

/** Files under `roots` longer than `linesMax` whose header gives no reason. */
export function longFilesWithoutReason(root: string, roots: readonly string[] = lengthRoots): LongFile[] {
  const files: string[] = []
  for (const r of roots) listTsFiles(root, r, files)
  const out: LongFile[] = []
  for (const file of files) {
    const text = readFileSync(path.join(root, file), 'utf8')
    const lines = lineCount(text)
    if (lines > linesMax && !headerGivesReason(text)) out.push({ file, lines })
  }
  return out
}

export function lineCount(text: string): number {
  if (text === '') return 0
  const newlines = text.split('\n').length - 1
  return text.endsWith('\n') ? newlines : newlines + 1
}

/** The first comment block: comments before the first token, up to the first blank line between two of them. */
export function headerOf(text: string): string {
  const start = text.startsWith('#!') ? (ts.getShebang(text)?.length ?? 0) : 0
  const ranges = ts.getLeadingCommentRanges(text, start) ?? []
  const block: string[] = []
  let prevEnd: number | undefined
  for (const r of ranges) {
    if (prevEnd !== undefined && /\n[ \t]*\r?\n/.test(text.slice(prevEnd, r.pos))) break
    block.push(text.slice(r.pos, r.end))
    prevEnd = r.end
  }
  return block.join('\n')
}

/** The header has a line starting `Over 500 lines:` with a reason after it. */
export function headerGivesReason(text: string): boolean {
  return headerOf(text)
    .split('\n')
    .map((line) => line.replace(/^\s*(\/\/+|\/\*+|\*+\/?)?\s*/, ''))
    .some((line) => line.startsWith(longFileMarker) && line.slice(longFileMarker.length).trim().replace(/\*\/$/, '').trim() !== '')
}

/** Every finding of the rules above, for the tree at `root`. */
export function checkArchitecture(root: string): ArchitectureFindings {
  const graph = importGraph(root)
  const next = new Map<string, string[]>()
  const typeOnly = new Map<string, boolean>()
  for (const e of graph.edges) {
    next.set(e.from, [...(next.get(e.from) ?? []), e.to])
    typeOnly.set(`${e.from}\0${e.to}`, e.typeOnly)
  }
  for (const succ of next.values()) succ.sort()
  const components = cyclicComponents(graph.files, next).map((files) => ({ files, ...componentCycles(files, next, typeOnly) }))
  return { files: graph.files.length, edges: graph.edges.length, components, longFiles: longFilesWithoutReason(root), unresolved: graph.unresolved }
}

export function findingCount(f: ArchitectureFindings): number {
  return f.components.length + f.longFiles.length + f.unresolved.length
}

/** `a → b →(type) c → a`: an arrow is marked (type) when every import along it is type-only. */
export function cycleText(c: Cycle): string {
  return [...c.files, c.files[0]!].map((f, i) => (i === 0 ? f : ` ${c.typeOnly[i - 1] ? '→(type)' : '→'} ${f}`)).join('')
}

/** The findings as lines of text; a last line says whether the rules hold. */
export function formatFindings(f: ArchitectureFindings): string {
  const lines: string[] = []
  for (const c of f.components) {
    lines.push(`import cycle among ${c.files.length} files: ${c.files.join(', ')}`)
    for (const cycle of c.cycles) lines.push(`  ${cycleText(cycle)}`)
    if (c.truncated) lines.push(`  … and more (listing stopped at ${c.cycles.length} cycles)`)
  }
  for (const u of f.unresolved) lines.push(`unresolved import: ${u.file} imports '${u.specifier}', which names no file`)
  for (const l of f.longFiles) lines.push(`${l.file}: ${l.lines} lines (over ${linesMax}) and no line starting '${longFileMarker}' with the reason in its header`)
  const n = findingCount(f)
  lines.push(
    n === 0
      ? `architecture ok: ${f.files} files, ${f.edges} imports among them, no cycle; no file in src/ over ${linesMax} lines without a reason`
      : `${n} architecture finding(s) (${f.components.length} cycle groups, ${f.longFiles.length} long files, ${f.unresolved.length} unresolved imports) in ${f.files} files with ${f.edges} imports among them`,
  )
  return lines.join('\n')
}
