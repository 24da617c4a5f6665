# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the full dependency tree.
# Node 26, the active LTS line (Node 20 left maintenance in April 2026). The code still runs on Node 20.12+
# (package.json engines), which CI uses.
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only, non-root.
FROM node:26-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATA_DIR=/data
# One glibc malloc arena: each argon2 hash takes 19 MiB, and with an arena per
# libuv thread glibc kept a freed block in each (RSS 205 MB after 160 logins
# instead of 142 MB); login throughput measured the same (npm run bench).
# A fixed mmap threshold: glibc otherwise raises it to the size of the first
# freed hash block, after which every 19 MiB block comes from the heap and is
# kept when freed; mapped blocks go back to the system at once (16 MB less RSS
# after the bench's logins, same login throughput).
ENV MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=4194304
# A young generation of 8 MiB semi-spaces instead of V8's 16: the bench's
# API-key soak after its logins and refreshes held 179-182 MB RSS for 60 s,
# where the default went from 166 to 200-209 MB (16 MB of it the larger young
# generation, the rest old space V8 grows before its first full collection).
# The price: scavenges twice as often, 1.37 instead of 0.94 us of collection
# per request (about 1 % of an API-key verification).
ENV NODE_OPTIONS=--max-semi-space-size=8
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY drizzle ./drizzle
COPY openapi ./openapi
# Node stops at a flag its V8 does not know: check the CMD's at build time, not at the container's start.
RUN node --heap-growing-percent=40 -e 0
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 3000
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# V8 lets the old generation grow to about four times what survived its last full collection
# before it collects again: after a burst of slow requests (refresh waits on PostgreSQL, so what it
# holds is promoted) that was 140 MB of garbage and an RSS of 204 MB. 1.4 times keeps the RSS flat
# (129-132 MB) for full collections of 4-14 ms every few seconds under that load. NODE_OPTIONS
# accepts only a few V8 flags and not this one, so it is given here (npm run bench reads it from
# this line).
CMD ["node", "--heap-growing-percent=40", "dist/server.js"]
