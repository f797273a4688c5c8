#!/bin/bash
# Build the self-contained hubsvc bundle that the RPM installs as /opt/hubsvc.
# Usage: packaging/build-bundle.sh DESTROOT [PREFIX]
#   DESTROOT  staging root (e.g. rpm's %{buildroot}); the bundle lands in DESTROOT/PREFIX
#   PREFIX    install path on the target (default /opt/hubsvc)
# Environment: PYTHON (default /usr/bin/python3.11) is the interpreter the venv is bound to.
# Run from the source tree (pyproject.toml, package.json, package-lock.json, packaging/).
set -euo pipefail

destroot=${1:?usage: build-bundle.sh DESTROOT [PREFIX]}
prefix=${2:-/opt/hubsvc}
python=${PYTHON:-/usr/bin/python3.11}
destroot=$(realpath -m "$destroot")
venv="$destroot$prefix"

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-compile --no-warn-script-location \
    --constraint packaging/requirements-rpm.txt \
    . -r packaging/requirements-rpm.txt
# The bundle needs no installer at run time.
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
# Scripts and metadata name the staging path: make them name PREFIX.
grep -rlI --null -F "$destroot" "$venv" | xargs -0 -r sed -i "s|$destroot||g"
# Byte-compile once, with the installed paths, so nothing writes to PREFIX at run time.
"$venv/bin/python" -m compileall -q -j0 -s "$destroot" -p / "$venv/lib" >/dev/null
# configurable-http-proxy, exactly as locked.
install -m 0644 package.json package-lock.json "$venv/"
(cd "$venv" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
rm -f "$venv/node_modules/.package-lock.json"

# Nothing may still point into the staging area.
if grep -rlI -F "$destroot" "$venv" | head -5 | grep .; then
    echo "build-bundle: files above still name $destroot" >&2
    exit 1
fi
test -x "$venv/bin/hubsvc"
test -x "$venv/bin/jupyterhub"
test -x "$venv/bin/jupyterhub-singleuser"
test -e "$venv/node_modules/.bin/configurable-http-proxy"
echo "bundle ready: $venv ($(du -sh "$venv" | cut -f1))"
