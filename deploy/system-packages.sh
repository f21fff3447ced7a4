#!/usr/bin/env bash
# The system packages the project and its whole test suite need, installed with apt-get when missing:
# a JDK and Maven (the local Kafka broker), chromium (the browser tests of the dashboard and the
# sandbox pages, driven by playwright, which downloads no browser), node and npm (the AsyncAPI CLI,
# deploy/tools.sh), promtool (the alert rules' checks; Debian's prometheus package, without its
# recommends). Both `.ci/run` and `deploy/test.sh` (README, "Test it") call it, so a newcomer's run
# is CI's run: add a tool the suite needs here, not to one of them. Idempotent: it installs nothing
# when every tool answers. Without root it uses sudo, or says what to install.
set -euo pipefail

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v "${LIENTHONG_CHROMIUM:-chromium}" >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
need_bare=()  # without recommends
command -v promtool >/dev/null 2>&1 || need_bare+=(prometheus)
missing=("${need_apt[@]}" "${need_bare[@]}")
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "system-packages.sh: missing ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages.sh: missing ${missing[*]} and no apt-get here; install them with this system's package manager" >&2
  exit 1
fi
echo "system-packages.sh: installing ${missing[*]}"
"${as_root[@]}" apt-get update -q
if [ "${#need_apt[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${need_apt[@]}"
fi
if [ "${#need_bare[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${need_bare[@]}"
fi
