// Types for the uPlot module the page imports as ./uplot.esm.js (served from node_modules/uplot/dist by routes/ui.ts).
import uPlot from '../node_modules/uplot/dist/uPlot.js'
export default uPlot
