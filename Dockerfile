# syntax=docker/dockerfile:1
# tokenledger: build with the full toolchain, run on a slim glibc image.
# DuckDB's native binding ships inside the npm package for linux-x64/arm64 glibc,
# so both stages use Debian-based Node LTS images (not Alpine/musl): one image, named
# once. Node 26 is the Active LTS line (since 2026-10-28; see the README's Set-up).
ARG NODE_IMAGE=node:26-trixie-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY routes ./routes
COPY proto ./proto
COPY ui ./ui
RUN npm run build && npm prune --omit=dev

FROM ${NODE_IMAGE} AS runtime
# Listening on 0.0.0.0 needs tokens: pass TOKENLEDGER_INGEST_TOKENS, _QUERY_TOKENS and
# _ADMIN_TOKENS at `docker run` (never bake secrets into the image); without them the
# service refuses to start and says so.
ENV NODE_ENV=production \
    TOKENLEDGER_HOST=0.0.0.0 \
    TOKENLEDGER_PORT=8080 \
    TOKENLEDGER_DATA_DIR=/data
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The OTLP .proto schemas, read at start-up by dist/src/ingest/otlp.js (../../../proto).
COPY --from=build /app/proto ./proto
# The dashboard's own files, read at start-up by dist/routes/ui.js (../../ui); uPlot comes from node_modules.
# test/image.test.ts starts the server from exactly what this stage copies.
COPY --from=build /app/ui ./ui
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.TOKENLEDGER_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Run node directly (not npm) so SIGTERM reaches the process and drains cleanly.
CMD ["node", "dist/src/server.js"]
