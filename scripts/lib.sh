# shellcheck shell=bash
# Shared helpers for Tollgate's developer scripts. Source it, do not run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It defines functions and a few variables only; it changes no shell option.

# Repository root (the directory holding scripts/).
TG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TG_ROOT

# Debian packages the build, the services and the tests need.
TG_PACKAGES=(
	libmicrohttpd-dev libpq-dev libjansson-dev libjwt-dev libcurl4-openssl-dev
	libhiredis-dev libssl-dev check libsubunit-dev meson ninja-build pkg-config
	postgresql redis-server wrk gcc nodejs npm curl
)

tg_log() { printf '[tollgate] %s\n' "$*" >&2; }
tg_warn() { printf '[tollgate] warning: %s\n' "$*" >&2; }
tg_die() {
	printf '[tollgate] error: %s\n' "$*" >&2
	exit 1
}

# --- packages -----------------------------------------------------------------

# tg_pkg_installed NAME: true when the Debian package NAME is installed.
tg_pkg_installed() {
	local status
	# Node.js from NodeSource (the machine's Node 20) ships npm inside the
	# nodejs package and conflicts with Debian's npm package: a working npm
	# command satisfies "npm".
	if [[ $1 == npm ]] && command -v npm >/dev/null 2>&1; then
		return 0
	fi
	status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
	[[ $status == installed ]]
}

# tg_ensure_packages: install whichever of TG_PACKAGES is missing.
tg_ensure_packages() {
	local pkg
	local -a missing=() sudo=()
	command -v dpkg-query >/dev/null 2>&1 ||
		tg_die "dpkg-query not found: these scripts expect Debian 12 (packages: ${TG_PACKAGES[*]})"
	for pkg in "${TG_PACKAGES[@]}"; do
		tg_pkg_installed "$pkg" || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0

	if ((EUID != 0)); then
		if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
			sudo=(sudo -n)
		else
			printf '[tollgate] error: missing Debian packages: %s\n' "${missing[*]}" >&2
			printf '[tollgate] install them as root with:\n' >&2
			printf '  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y %s\n' "${missing[*]}" >&2
			exit 1
		fi
	fi
	tg_log "installing missing Debian packages: ${missing[*]}"
	"${sudo[@]}" apt-get update ||
		tg_die "apt-get update failed"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" ||
		tg_die "apt-get install failed for: ${missing[*]}"
}

# --- build --------------------------------------------------------------------

# tg_build BUILDDIR [MESON OPTIONS...]: configure BUILDDIR if needed (again when
# the options differ from the last configuration), then compile it.
# A relative BUILDDIR is taken relative to the repository root.
tg_build() {
	local builddir=$1
	shift
	[[ $builddir == /* ]] || builddir=$TG_ROOT/$builddir
	local stamp=$builddir/.tg-setup-options
	local want
	want=$(printf '%s\n' "$@")

	if [[ ! -f $builddir/meson-private/coredata.dat ]]; then
		tg_log "meson setup $builddir $*"
		meson setup "$@" "$builddir" "$TG_ROOT" ||
			tg_die "meson setup failed for $builddir (see the output above)"
		printf '%s' "$want" >"$stamp"
	elif [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
		tg_log "meson setup --reconfigure $builddir $*"
		meson setup --reconfigure "$@" "$builddir" "$TG_ROOT" ||
			tg_die "meson setup --reconfigure failed for $builddir (see the output above)"
		printf '%s' "$want" >"$stamp"
	fi
	tg_log "meson compile -C $builddir"
	meson compile -C "$builddir" ||
		tg_die "build failed in $builddir (see the compiler output above)"
}

# --- ports --------------------------------------------------------------------

# tg_port_in_use PORT: true when something listens on TCP PORT (on any local
# address: a wildcard listener would collide with 127.0.0.1 as well).
tg_port_in_use() {
	local port=$1 out
	if command -v ss >/dev/null 2>&1; then
		out=$(ss -Hltn "sport = :$port" 2>/dev/null) || out=
		[[ -n $out ]] && return 0
	fi
	# Fallback (and a second opinion): try to connect.
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# tg_free_port [EXCLUDED PORT...]: print a TCP port that nothing listens on,
# chosen at random below the kernel's ephemeral range and outside the list.
tg_free_port() {
	local port tries ex skip
	for ((tries = 0; tries < 200; tries++)); do
		port=$((15000 + (RANDOM * 32768 + RANDOM) % 17000))
		skip=0
		for ex in "$@"; do
			[[ $ex == "$port" ]] && skip=1
		done
		((skip)) && continue
		if ! tg_port_in_use "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	tg_die "could not find a free TCP port on 127.0.0.1"
}

# --- small utilities ----------------------------------------------------------

# tg_random_hex NBYTES: print NBYTES random bytes as lowercase hex.
tg_random_hex() {
	local n=$1
	if command -v openssl >/dev/null 2>&1; then
		openssl rand -hex "$n"
	else
		od -An -tx1 -N"$n" /dev/urandom | tr -d ' \n'
		printf '\n'
	fi
}

# tg_env_get FILE KEY: print the value of KEY from a KEY=value file.
tg_env_get() {
	local file=$1 key=$2 line
	[[ -r $file ]] || return 1
	while IFS= read -r line || [[ -n $line ]]; do
		if [[ $line == "$key="* ]]; then
			printf '%s\n' "${line#*=}"
			return 0
		fi
	done <"$file"
	return 1
}

# tg_load_env FILE: export every KEY=value line of FILE (no shell evaluation).
tg_load_env() {
	local file=$1 line key
	[[ -r $file ]] || tg_die "cannot read $file"
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || continue
		key=${line%%=*}
		export "$key=${line#*=}"
	done <"$file"
}

# tg_services_dir: the services directory ($TG_SERVICES_DIR or <repo>/.local),
# as an absolute path.
tg_services_dir() {
	local dir=${TG_SERVICES_DIR:-$TG_ROOT/.local}
	[[ $dir == /* ]] || dir=$PWD/$dir
	printf '%s\n' "$dir"
}
