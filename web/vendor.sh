#!/bin/sh
# Reproduce loadtester/web/static/vendor/ from the npm registry.
#   cd web && ./vendor.sh
# npm ci installs the exact versions in package-lock.json into web/node_modules/
# (not committed); the built files the UI loads are copied next to it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../loadtester/web/static/vendor"
cd "$here"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
mkdir -p "$dest"
cp node_modules/uplot/dist/uPlot.iife.min.js "$dest/uPlot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$dest/uPlot.min.css"
cp node_modules/uplot/LICENSE "$dest/uPlot.LICENSE"
version=$(node -p "require('./node_modules/uplot/package.json').version")
printf 'uPlot %s (npm package uplot, MIT), copied from node_modules/uplot/dist by web/vendor.sh\n' "$version" > "$dest/README"
echo "vendored uPlot $version into $dest"
