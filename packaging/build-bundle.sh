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
# rfc3987-syntax (and lark, which only it uses) arrives through jupyter-events'
# jsonschema[format-nongpl]: at import it builds ~30 Earley parsers, 1.3-2 s of CPU at
# every start of the hub and of every user's server. jsonschema loads it only to check the
# "iri"/"iri-reference" formats and checks everything else without it; no schema the hub or
# JupyterLab emits uses those formats. The smoke check below still imports both ends.
"$venv/bin/python" -m pip uninstall --quiet --yes rfc3987-syntax lark
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
"$venv/bin/python" -c "import jupyterhub.app, jupyter_server.serverapp, jsonschema" || {
    echo "build-bundle: the bundled hub or server does not import" >&2; exit 1; }
test -x "$venv/bin/jupyterhub"
test -x "$venv/bin/jupyterhub-singleuser"
test -e "$venv/node_modules/.bin/configurable-http-proxy"
echo "bundle ready: $venv ($(du -sh "$venv" | cut -f1))"
