#!/usr/bin/env bash
# Lint openapi/openapi.yaml with Redocly CLI (its built-in `recommended`
# ruleset, or redocly.yaml at the repository root when there is one).
# Redocly CLI comes from the npm registry, pinned, into .local/node.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$TG_ROOT"

REDOCLY_VERSION=2.77.0 # needs Node >= 20.19 (20.x) or >= 22.12
NODE_DIR=$TG_ROOT/.local/node
REDOCLY=$NODE_DIR/node_modules/.bin/redocly
SPEC=openapi/openapi.yaml

[[ -f $SPEC ]] || tg_die "openapi-lint: $SPEC not found"
command -v npm >/dev/null 2>&1 || tg_die "openapi-lint: npm not found (apt-get install nodejs npm)"

installed_version() {
	local pkg=$NODE_DIR/node_modules/@redocly/cli/package.json
	[[ -f $pkg ]] || return 1
	node -p 'require(process.argv[1]).version' "$pkg" 2>/dev/null
}

mkdir -p "$NODE_DIR"
(
	flock -w 300 9 || tg_die "openapi-lint: $NODE_DIR is locked by another install"
	if [[ ! -x $REDOCLY || $(installed_version || true) != "$REDOCLY_VERSION" ]]; then
		tg_log "openapi-lint: installing @redocly/cli@$REDOCLY_VERSION into $NODE_DIR"
		npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
			"@redocly/cli@$REDOCLY_VERSION" ||
			tg_die "openapi-lint: npm install @redocly/cli@$REDOCLY_VERSION failed"
	fi
) 9>"$NODE_DIR/.lock"

# No telemetry or update check: the machine reaches no network but registries.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
"$REDOCLY" lint "$SPEC"
