#!/usr/bin/env bash
# The Node tools the suite and `lienthong contract generate` use, from npm, into .tools/ (ignored by git):
# the AsyncAPI CLI (.tools/asyncapi-cli) that validates docs/contract/asyncapi.yaml, and the HTML template
# (.tools/asyncapi-html) it renders docs/contract/html/index.html with. Versions are locked in
# deploy/tools/*/package-lock.json. Idempotent: a tool is installed again only when its lock changed.
# Needs node and npm (Debian: apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tools.sh: node and npm are needed (Debian: apt-get install nodejs npm); the AsyncAPI check is skipped without them" >&2
  exit 1
fi
for tool in asyncapi-cli asyncapi-html; do
  target=.tools/$tool
  stamp=$target/.installed-$(cat deploy/tools/$tool/package.json deploy/tools/$tool/package-lock.json | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    echo "tools.sh: installing $tool from npm into $target (a few minutes the first time)"
    mkdir -p "$target"
    cp deploy/tools/$tool/package.json deploy/tools/$tool/package-lock.json "$target/"
    # puppeteer (the template's PDF output, unused) would download a browser from outside npm
    (cd "$target" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    rm -f "$target"/.installed-*
    touch "$stamp"
  fi
done
# The CLI reports each command to AsyncAPI's metrics service unless its config says not to; keep that
# config here rather than in the home directory (the CLI reads ASYNCAPI_METRICS_CONFIG_PATH).
[ -f .tools/asyncapi-analytics.json ] ||
  echo '{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "lienthong"}' > .tools/asyncapi-analytics.json
version=$(ASYNCAPI_METRICS_CONFIG_PATH=.tools/asyncapi-analytics.json .tools/asyncapi-cli/node_modules/.bin/asyncapi --version | head -1)
echo "tools.sh: .tools ready ($version)"
