#!/usr/bin/env bash
# Verify real Tollgate webhook deliveries with the Standard Webhooks reference library for
# JavaScript (`standardwebhooks` from the npm registry, pinned, into .local/node), not only with
# our own code: start a tollgated, a Node receiver on loopback that runs
# `new Webhook(secret).verify(body, headers)` on every request, trigger a `ping` and a
# `limit.threshold`, and fail unless both verify, a tampered body and a wrong secret do not, and
# after a secret rotation both the new and the old secret verify.
#
# Needs TOLLGATE_DATABASE_URL and TOLLGATE_REDIS_URL (scripts/test exports them; otherwise they are
# read from $TG_SERVICES_DIR/services.env, see scripts/services). The server is $TOLLGATE_BIN, else
# build-test/tollgated, else build/tollgated.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$TG_ROOT"

SW_VERSION=1.1.1
NODE_DIR=$TG_ROOT/.local/node
NAME=webhooks-standardwebhooks
DEADLINE=$((SECONDS + 55)) # the whole check, installation aside

command -v node >/dev/null 2>&1 || tg_die "$NAME: node not found (apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || tg_die "$NAME: npm not found (apt-get install nodejs npm)"
command -v curl >/dev/null 2>&1 || tg_die "$NAME: curl not found"

# --- the library -----------------------------------------------------------------
installed_version() {
	local pkg=$NODE_DIR/node_modules/standardwebhooks/package.json
	[[ -f $pkg ]] || return 1
	node -p 'require(process.argv[1]).version' "$pkg" 2>/dev/null
}

mkdir -p "$NODE_DIR"
(
	flock -w 300 9 || tg_die "$NAME: $NODE_DIR is locked by another install"
	if [[ $(installed_version || true) != "$SW_VERSION" ]]; then
		tg_log "$NAME: installing standardwebhooks@$SW_VERSION into $NODE_DIR"
		npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
			"standardwebhooks@$SW_VERSION" ||
			tg_die "$NAME: npm install standardwebhooks@$SW_VERSION failed"
	fi
) 9>"$NODE_DIR/.lock"
DEADLINE=$((SECONDS + 55))

# --- services and binary ---------------------------------------------------------
if [[ -z ${TOLLGATE_DATABASE_URL:-} || -z ${TOLLGATE_REDIS_URL:-} ]]; then
	env_file=$(tg_services_dir)/services.env
	[[ -r $env_file ]] ||
		tg_die "$NAME: TOLLGATE_DATABASE_URL / TOLLGATE_REDIS_URL unset and no $env_file (run scripts/test, or scripts/services start)"
	tg_load_env "$env_file"
fi
BIN=${TOLLGATE_BIN:-}
if [[ -z $BIN ]]; then
	for b in build-test/tollgated build/tollgated; do
		if [[ -x $b ]]; then
			BIN=$TG_ROOT/$b
			break
		fi
	done
fi
[[ -n $BIN && -x $BIN ]] || tg_die "$NAME: no tollgated binary (build-test/tollgated or build/tollgated; or set TOLLGATE_BIN)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tg-swh.XXXXXX")
SRV_PID=
RCV_PID=
cleanup() {
	local rc=$?
	if [[ -n $RCV_PID ]]; then
		kill "$RCV_PID" 2>/dev/null || true
		wait "$RCV_PID" 2>/dev/null || true
	fi
	if [[ -n $SRV_PID ]]; then
		kill "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
	fi
	if ((rc != 0)); then
		printf '%s: tollgated log (last 30 lines):\n' "$NAME" >&2
		tail -n 30 "$WORK/tollgated.log" >&2 2>/dev/null || true
		printf '%s: receiver log:\n' "$NAME" >&2
		cat "$WORK/receiver.log" >&2 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

fail() {
	printf '%s: FAIL: %s\n' "$NAME" "$*" >&2
	exit 1
}

# --- the receiver --------------------------------------------------------------
# Every request: verify with each secret in secrets.json (the current one first; after a rotation
# also the previous one), then a tampered body and a wrong secret, which must both be refused.
cat >"$WORK/receiver.js" <<'EOF'
'use strict';
const http = require('http');
const fs = require('fs');
const { Webhook } = require(process.env.SW_MODULE);
const [, , portFile, secretsFile, resultsFile] = process.argv;
const WRONG = 'whsec_' + Buffer.alloc(32, 7).toString('base64');

function attempt(secret, body, headers) {
	try {
		new Webhook(secret).verify(body, headers);
		return true;
	} catch (e) {
		return false;
	}
}

const server = http.createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		const body = Buffer.concat(chunks).toString('utf8');
		let secrets = [];
		try {
			secrets = JSON.parse(fs.readFileSync(secretsFile, 'utf8'));
		} catch (e) {}
		let type = null;
		try {
			type = JSON.parse(body).type;
		} catch (e) {}
		const tampered = body.replace(/"type"/, '"typf"');
		const result = {
			type,
			id: req.headers['webhook-id'] || null,
			signature: req.headers['webhook-signature'] || null,
			verified: secrets.map((s) => attempt(s, body, req.headers)),
			tampered_refused: secrets.length > 0 && secrets.every((s) => !attempt(s, tampered, req.headers)),
			wrong_secret_refused: !attempt(WRONG, body, req.headers),
		};
		fs.appendFileSync(resultsFile, JSON.stringify(result) + '\n');
		res.writeHead(200, { 'Content-Type': 'text/plain', Connection: 'close' });
		res.end('ok');
	});
});
server.listen(0, '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
EOF

printf '[]' >"$WORK/secrets.json"
: >"$WORK/results.jsonl"
SW_MODULE=$NODE_DIR/node_modules/standardwebhooks node "$WORK/receiver.js" "$WORK/port" "$WORK/secrets.json" \
	"$WORK/results.jsonl" >"$WORK/receiver.log" 2>&1 &
RCV_PID=$!
for _ in $(seq 1 100); do
	[[ -s $WORK/port ]] && break
	kill -0 "$RCV_PID" 2>/dev/null || fail "the Node receiver exited at start-up"
	sleep 0.1
done
[[ -s $WORK/port ]] || fail "the Node receiver did not start"
RCV_PORT=$(<"$WORK/port")

# --- tollgated -------------------------------------------------------------------
PORT=$(tg_free_port "$RCV_PORT")
BASE=http://127.0.0.1:$PORT
ADMIN=adm_swh_$(tg_random_hex 12)
TOLLGATE_LISTEN=127.0.0.1:$PORT TOLLGATE_ADMIN_TOKEN=$ADMIN TOLLGATE_JWT_SECRET=standardwebhooks-check \
	TOLLGATE_WEBHOOK_ALLOW_PRIVATE=1 TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=200 TOLLGATE_THREADS=2 \
	"$BIN" >"$WORK/tollgated.log" 2>&1 &
SRV_PID=$!
ready=0
for _ in $(seq 1 150); do
	kill -0 "$SRV_PID" 2>/dev/null || fail "tollgated exited at start-up"
	if curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
((ready)) || fail "tollgated did not become ready in 15 s"

# api METHOD PATH AUTH [BODY]: prints the body; fails unless the status is 2xx
api() {
	local method=$1 path=$2 auth=$3 body=${4:-} out status
	local -a args=(-sS -X "$method" -H "Authorization: Bearer $auth" -o "$WORK/resp" -w '%{http_code}' --max-time 10)
	[[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
	status=$(curl "${args[@]}" "$BASE$path") || fail "$method $path: curl failed"
	out=$(<"$WORK/resp")
	[[ $status == 2?? ]] || fail "$method $path $body: HTTP $status: $out"
	printf '%s' "$out"
}
# jget JSON KEY: the first string value of KEY (ids and secrets: no escapes in them)
jget() {
	local re="\"$2\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
	[[ $1 =~ $re ]] || fail "no '$2' in $1"
	printf '%s' "${BASH_REMATCH[1]}"
}

tenant=$(api POST /v1/tenants "$ADMIN" '{"name":"standardwebhooks check"}')
KEY=$(jget "$tenant" api_key)
api POST /v1/meters "$KEY" '{"id":"tokens","event_type":"llm","aggregation":"sum","property":"tokens"}' >/dev/null
api POST /v1/limits "$KEY" '{"id":"budget","meter":"tokens","kind":"quota","period":"month","limit":1000,"thresholds":[0.8]}' >/dev/null
ep=$(api POST /v1/webhook_endpoints "$KEY" "{\"url\":\"http://127.0.0.1:$RCV_PORT/webhooks\",\"events\":[\"*\"]}")
EP=$(jget "$ep" id)
SECRET=$(jget "$ep" secret)
[[ $SECRET == whsec_* ]] || fail "endpoint secret '$SECRET'"
printf '["%s"]' "$SECRET" >"$WORK/secrets.json"

# wait_for TYPE N: until N results of TYPE were recorded
wait_for() {
	local type=$1 n=$2
	while ((SECONDS < DEADLINE)); do
		(($(grep -c "\"type\":\"$type\"" "$WORK/results.jsonl" || true) >= n)) && return 0
		sleep 0.2
	done
	fail "no $type delivery reached the receiver (have: $(cut -c1-200 "$WORK/results.jsonl" | tr '\n' ' '))"
}

api POST "/v1/webhook_endpoints/$EP/test" "$KEY" >/dev/null
api POST /v1/events "$KEY" '{"customer_id":"cust-1","type":"llm","properties":{"tokens":850}}' >/dev/null
wait_for ping 1
wait_for limit.threshold 1

# rotate: deliveries then carry two signatures; each secret alone must verify
rot=$(api POST "/v1/webhook_endpoints/$EP/rotate_secret" "$KEY")
NEW=$(jget "$rot" secret)
[[ $NEW == whsec_* && $NEW != "$SECRET" ]] || fail "rotated secret '$NEW'"
printf '["%s","%s"]' "$NEW" "$SECRET" >"$WORK/secrets.json"
api POST "/v1/webhook_endpoints/$EP/test" "$KEY" >/dev/null
wait_for ping 2

# --- verdict -----------------------------------------------------------------------
node - "$WORK/results.jsonl" <<'EOF' || fail "verification failed (see above)"
'use strict';
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => JSON.parse(l));
let bad = 0;
const need = [
	['ping', 0, 1],
	['limit.threshold', 0, 1],
	['ping', 1, 2], // after the rotation: new and old secret
];
for (const [type, k, nsecrets] of need) {
	const r = rows.filter((x) => x.type === type)[k];
	const ok = r && r.verified.length === nsecrets && r.verified.every(Boolean) && r.tampered_refused && r.wrong_secret_refused;
	console.log(`${ok ? 'ok  ' : 'FAIL'} ${type} #${k + 1}: ${JSON.stringify(r)}`);
	if (!ok) bad++;
}
for (const r of rows)
	if (!r.verified.every(Boolean) || !r.tampered_refused || !r.wrong_secret_refused) {
		console.log(`FAIL a delivery did not verify as it should: ${JSON.stringify(r)}`);
		bad++;
	}
process.exit(bad ? 1 : 0);
EOF
tg_log "$NAME: ping, limit.threshold and a rotated delivery verified with standardwebhooks@$SW_VERSION"
