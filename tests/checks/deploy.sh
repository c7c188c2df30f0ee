#!/usr/bin/env bash
# Check deploy/ against the code it deploys (no container engine or systemd runs here, so this is
# what can be checked without one):
# - the systemd unit passes `systemd-analyze verify` (with the built binary and the example
#   environment file in place of the installed paths), when systemd-analyze is installed;
# - the Containerfile's runtime stage installs the Debian package of every library tollgated links
#   (found with ldd and dpkg -S), and its build stage every build package scripts/lib.sh installs;
# - the example environment file names every variable of `tollgated --help` and no other, and
#   compose.yaml sets only variables tollgated knows.
# The binary is $TOLLGATE_BIN, else build-test/tollgated, else build/tollgated.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$TG_ROOT"

NAME=deploy
UNIT=deploy/tollgated.service
ENV_EXAMPLE=deploy/tollgated.env.example
CONTAINERFILE=deploy/Containerfile
COMPOSE=deploy/compose.yaml
failures=0
fail() {
	tg_warn "$NAME: $*"
	failures=$((failures + 1))
}

BIN=${TOLLGATE_BIN:-}
if [[ -z $BIN ]]; then
	for b in build-test/tollgated build/tollgated; do
		[[ -x $b ]] && BIN=$b && break
	done
fi
[[ -n $BIN && -x $BIN ]] || tg_die "$NAME: no tollgated binary (build-test/tollgated or build/tollgated; or set TOLLGATE_BIN)"
for f in "$UNIT" "$ENV_EXAMPLE" "$CONTAINERFILE" "$COMPOSE"; do
	[[ -f $f ]] || tg_die "$NAME: $f is missing"
done

# --- the systemd unit -------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	sed -e "s|^ExecStart=/usr/local/bin/tollgated|ExecStart=$TG_ROOT/$BIN|" \
		-e "s|^EnvironmentFile=/etc/tollgate/tollgated.env|EnvironmentFile=$TG_ROOT/$ENV_EXAMPLE|" \
		"$UNIT" >"$tmp/tollgated.service"
	grep -q "^ExecStart=$TG_ROOT/$BIN\$" "$tmp/tollgated.service" || fail "$UNIT: no ExecStart=/usr/local/bin/tollgated"
	if out=$(systemd-analyze verify "$tmp/tollgated.service" 2>&1) && [[ -z $out ]]; then
		tg_log "$NAME: systemd-analyze verify: $UNIT is clean"
	else
		fail "systemd-analyze verify $UNIT: ${out:-failed}"
	fi
else
	tg_log "$NAME: systemd-analyze not installed: the unit file is not verified"
fi

# --- the Containerfile's packages ---------------------------------------------------
# stage_packages N: the packages the Nth `FROM` stage of the Containerfile installs.
stage_packages() {
	awk -v want="$1" '
		/^FROM / { stage++ }
		stage == want && /apt-get install/ { on = 1 }
		stage == want && on {
			for (i = 1; i <= NF; i++)
				if ($i !~ /^-/ && $i !~ /^(apt-get|install|DEBIAN_FRONTEND=.*|\\|&&|rm|useradd)$/) print $i
			if ($0 !~ /\\$/ || $0 ~ /&&/ && $0 !~ /apt-get install/) on = 0
		}' "$CONTAINERFILE" | grep -E '^[a-z0-9][a-z0-9.+-]+$' | sort -u
}
runtime=$(stage_packages 2)
build=$(stage_packages 1)
[[ -n $runtime && -n $build ]] || tg_die "$NAME: cannot read the package lists of $CONTAINERFILE"

linked=0
while read -r soname path; do
	[[ $soname == ld-linux* ]] && continue # the dynamic loader: libc6
	[[ -n $path && -e $path ]] || {
		fail "$BIN links $soname, which ldd cannot find"
		continue
	}
	pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null || dpkg -S "$path" 2>/dev/null || true)
	pkg=${pkg%%:*}
	[[ -n $pkg ]] || {
		fail "no Debian package holds $path ($soname)"
		continue
	}
	[[ $pkg == libc6 ]] && continue # in every Debian image
	linked=$((linked + 1))
	grep -qx "$pkg" <<<"$runtime" || fail "$CONTAINERFILE: the runtime stage does not install $pkg ($soname, linked by tollgated)"
done < <(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | while read -r so; do
	printf '%s %s\n' "$so" "$(ldd "$BIN" | awk -v so="$so" '$1 == so { print $3 }')"
done)
((linked >= 6)) || fail "only $linked linked libraries found in $BIN (expected libmicrohttpd, libpq, hiredis, jansson, libjwt, libcurl, libcrypto)"

for pkg in "${TG_PACKAGES[@]}"; do
	case $pkg in
	*-dev | meson | ninja-build | pkg-config | check | gcc)
		grep -qx "$pkg" <<<"$build" || fail "$CONTAINERFILE: the build stage does not install $pkg (scripts/lib.sh builds with it)"
		;;
	esac
done

# --- variables ------------------------------------------------------------------------
known=$("$BIN" --help | sed -n 's/^  \(TOLLGATE_[A-Z_]*\) .*/\1/p' | sort -u)
[[ $(wc -l <<<"$known") -ge 10 ]] || tg_die "$NAME: cannot read the variables of tollgated --help"
example=$(sed -n 's/^#\{0,1\}\(TOLLGATE_[A-Z_]*\)=.*/\1/p' "$ENV_EXAMPLE" | sort -u)
missing=$(comm -23 <(printf '%s\n' "$known") <(printf '%s\n' "$example"))
unknown=$(comm -13 <(printf '%s\n' "$known") <(printf '%s\n' "$example"))
[[ -z $missing ]] || fail "$ENV_EXAMPLE does not mention: $(tr '\n' ' ' <<<"$missing")"
[[ -z $unknown ]] || fail "$ENV_EXAMPLE names variables tollgated does not know: $(tr '\n' ' ' <<<"$unknown")"
if grep -nE '^TOLLGATE_[A-Z_]*=.*#' "$ENV_EXAMPLE"; then
	fail "$ENV_EXAMPLE: a comment after a value becomes part of the value"
fi
compose_vars=$(sed -n 's/^ *\(TOLLGATE_[A-Z_]*\):.*/\1/p' "$COMPOSE" | sort -u)
[[ -n $compose_vars ]] || fail "$COMPOSE sets no TOLLGATE_ variable"
unknown=$(comm -13 <(printf '%s\n' "$known") <(printf '%s\n' "$compose_vars"))
[[ -z $unknown ]] || fail "$COMPOSE sets variables tollgated does not know: $(tr '\n' ' ' <<<"$unknown")"

if ((failures)); then
	tg_die "$NAME: $failures problem(s)"
fi
tg_log "$NAME: unit, Containerfile packages ($linked linked libraries) and variables agree with $BIN"
