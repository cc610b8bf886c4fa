#!/usr/bin/env bash
# Builds local base images from Debian's packages, so that the Dockerfile and
# its tests need no container registry:
#
#   appbin/builder-debian12               Debian 12 minbase (debootstrap), apt
#                                         sources (deb + deb-src) configured
#   appbin/builder-debian13               the same for Debian 13 (trixie)
#   appbin/distroless-static-debian13     distroless-equivalent bases: the
#   appbin/distroless-base-nossl-debian13 package sets distroless uses, the
#   appbin/distroless-base-debian13       files it adds (passwd, group,
#   appbin/distroless-cc-debian13         nsswitch.conf, os-release, CA bundle,
#   appbin/distroless-static-debian12     status.d, /tmp, /home/nonroot), no
#   appbin/distroless-base-debian12       shell, no package manager; tags
#   appbin/distroless-cc-debian12         :latest (root, /) and :nonroot
#   appbin/distroless-python3-debian12    (65532, /home/nonroot)
#   appbin/distroless-python3-debian13    (python3.13 from trixie, as today's
#                                         distroless python3-debian13)
#
# Usage: tests/docker/build-bases.sh [--force] [--no-verify] [IMAGE...]
#   IMAGE is a short name (builder-debian12, distroless-base-debian13, ...);
#   none means all. An image whose tags exist already is skipped unless --force.
# Environment:
#   APPBIN_DOCKER_CACHE    download cache (default <repo>/build/docker-cache)
#   DEBIAN_MIRROR          default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR default http://deb.debian.org/debian-security
#   DOCKER                 docker client (default: docker)
set -euo pipefail
# debootstrap and unpacking packages with their owners need root.
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi

top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${APPBIN_DOCKER_CACHE:-$top/build/docker-cache}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
sec_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
DOCKER=${DOCKER:-docker}
# A fixed timestamp for every file and for the import: the same packages give
# the same layer.
epoch=${SOURCE_DATE_EPOCH:-1700000000}

force=0 verify=1 wanted=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    --no-verify) verify=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-bases: unknown option $a" >&2; exit 2 ;;
    *) wanted+=("${a#appbin/}") ;;
  esac
done

log() { echo "build-bases: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- package sets (DISTROLESS.md; each image adds to the previous one) -------
static12=(base-files netbase tzdata media-types)
base12=("${static12[@]}" libc6 libssl3)
cc12=("${base12[@]}" libgomp1 libstdc++6 libgcc-s1 gcc-12-base)
python12=("${cc12[@]}" libbz2-1.0 libdb5.3 libexpat1 liblzma5 libsqlite3-0 libuuid1
  libncursesw6 libtinfo6 python3-distutils zlib1g libcom-err2 libcrypt1
  libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 libnsl2
  libreadline8 libtirpc3 libffi8 libpython3.11-minimal libpython3.11-stdlib
  python3.11-minimal)
static13=(base-files netbase tzdata media-types)
base13=("${static13[@]}" libc6 libssl3t64 libzstd1 zlib1g)
base_nossl13=("${static13[@]}" libc6)
cc13=("${base13[@]}" libgomp1 libstdc++6 libgcc-s1 gcc-14-base)
# libpython3.13-stdlib's dependencies, as distroless python3-debian13 has them.
python13=("${cc13[@]}" libbz2-1.0 libdb5.3t64 libexpat1 liblzma5 libsqlite3-0 libuuid1
  libncursesw6 libtinfo6 libcom-err2 libcrypt1 libgssapi-krb5-2 libk5crypto3
  libkeyutils1 libkrb5-3 libkrb5support0 libnsl2 libreadline8t64 libtirpc3t64 libffi8
  libmpdec4 libpython3.13-minimal libpython3.13-stdlib python3.13-minimal)

all_images=(builder-debian12 builder-debian13
  distroless-static-debian13 distroless-base-nossl-debian13 distroless-base-debian13
  distroless-cc-debian13
  distroless-static-debian12 distroless-base-debian12 distroless-cc-debian12
  distroless-python3-debian12 distroless-python3-debian13)
[ ${#wanted[@]} -gt 0 ] || wanted=("${all_images[@]}")
for w in "${wanted[@]}"; do
  printf '%s\n' "${all_images[@]}" | grep -qx "$w" || die "unknown image $w (known: ${all_images[*]})"
done

# --- tools ------------------------------------------------------------------
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
[ -f "$keyring" ] || need_pkgs+=(debian-archive-keyring)
command -v cc >/dev/null && command -v c++ >/dev/null || need_pkgs+=(build-essential)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
"$DOCKER" info >/dev/null 2>&1 || die "'$DOCKER info' fails: is the docker daemon running and reachable?"

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$cache"
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- a private apt for one suite (never touches the host's apt state) -------
apt_ready=()
apt_for() { # SUITE -> sets APT_CONFIG for apt-get calls; runs update once a run
  local suite=$1 d="$cache/apt-$1"
  mkdir -p "$d/etc/apt.conf.d" "$d/etc/sources.list.d" "$d/etc/preferences.d" \
           "$d/state/lists/partial" "$d/cache/archives/partial" "$d/debs"
  : > "$d/status"
  local sl="$d/etc/sources.list"
  printf 'deb [signed-by=%s] %s %s main\n' \
    "$keyring" "$mirror" "$suite" "$keyring" "$mirror" "$suite-updates" \
    "$keyring" "$sec_mirror" "$suite-security" > "$sl"
  cat > "$d/apt.conf" <<EOF
Dir::Etc "$d/etc";
Dir::Etc::sourcelist "$sl";
Dir::Etc::sourceparts "$d/etc/sources.list.d";
Dir::Etc::parts "$d/etc/apt.conf.d";
Dir::Etc::preferencesparts "$d/etc/preferences.d";
Dir::Etc::main "/dev/null";
Dir::State "$d/state";
Dir::State::status "$d/status";
Dir::Cache "$d/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Retries "3";
APT::Sandbox::User "root";
EOF
  export APT_CONFIG="$d/apt.conf"
  if ! printf '%s\n' "${apt_ready[@]}" | grep -qx "$suite"; then
    log "apt-get update ($suite)"
    apt-get update -qq >/dev/null || die "apt-get update for $suite failed"
    apt_ready+=("$suite")
  fi
}

DEBS=()
fetch_debs() { # SUITE PKG... -> DEBS=(paths of the .debs), each downloaded once
  local suite=$1; shift
  apt_for "$suite"
  local d="$cache/apt-$suite/debs" uris
  mkdir -p "$work/empty" # --print-uris leaves out files present in the cwd
  uris=$(cd "$work/empty" && apt-get download --print-uris "$@") || die "apt-get download --print-uris $* ($suite)"
  (cd "$d" && apt-get download -qq "$@" >/dev/null 2>&1) || die "apt-get download $* ($suite) failed"
  mapfile -t DEBS < <(awk '{print $2}' <<<"$uris" | sed "s|^|$d/|")
  [ ${#DEBS[@]} = $# ] || die "expected $# .debs for $*, got ${#DEBS[@]}"
  unset APT_CONFIG
}

# --- distroless-equivalent rootfs ------------------------------------------
distroless_rootfs() { # ROOT VERSION(12|13) SUITE PKG...
  local root=$1 ver=$2 suite=$3; shift 3
  mkdir -p "$root"
  if [ "$ver" -ge 13 ]; then # merged-usr
    mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
    ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
  fi
  mkdir -p "$root/var/lib/dpkg/status.d"
  local deb pkg
  fetch_debs "$suite" "$@"
  for deb in "${DEBS[@]}"; do
    pkg=$(dpkg-deb -f "$deb" Package)
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
    dpkg-deb -f "$deb" > "$root/var/lib/dpkg/status.d/$pkg"
    dpkg-deb -I "$deb" md5sums > "$root/var/lib/dpkg/status.d/$pkg.md5sums" 2>/dev/null ||
      rm -f "$root/var/lib/dpkg/status.d/$pkg.md5sums"
  done

  # CA bundle: the certificates of ca-certificates, concatenated as
  # update-ca-certificates does (the package itself is not installed).
  local ca="$work/ca-$suite"
  if [ ! -d "$ca" ]; then
    mkdir -p "$ca"
    fetch_debs "$suite" ca-certificates
    dpkg-deb -x "${DEBS[0]}" "$ca"
  fi
  mkdir -p "$root/etc/ssl/certs"
  find "$ca/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort |
    xargs cat > "$root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "empty CA bundle"
  chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"

  # What distroless adds beyond the packages.
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'tty:x:5:' 'staff:x:50:' 'nobody:x:65534:' \
    'nonroot:x:65532:' > "$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
  cat > "$root/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files
EOF
  local codename; codename=$([ "$ver" -ge 13 ] && echo trixie || echo bookworm)
  rm -f "$root/etc/os-release" "$root/usr/lib/os-release"
  mkdir -p "$root/usr/lib"
  cat > "$root/usr/lib/os-release" <<EOF
PRETTY_NAME="Distroless"
NAME="Debian GNU/Linux"
ID="debian"
VERSION_ID="$ver"
VERSION="Debian GNU/Linux $ver ($codename)"
VERSION_CODENAME=$codename
HOME_URL="https://github.com/GoogleContainerTools/distroless"
EOF
  ln -s ../usr/lib/os-release "$root/etc/os-release"
  mkdir -p "$root/root" "$root/home/nonroot" "$root/tmp"
  chmod 0700 "$root/root"; chmod 0755 "$root/home"; chmod 0700 "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"; chmod 1777 "$root/tmp"

  # No docs beyond copyright files, no man/info pages, no lintian overrides.
  if [ -d "$root/usr/share/doc" ]; then
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  fi
  rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian" \
         "$root/usr/share/bug" "$root/usr/share/gcc" "$root/usr/share/gdb"
  # Anything that would make the image a shell image is a bug in the sets.
  for f in bin/sh usr/bin/sh bin/bash usr/bin/bash usr/bin/apt-get usr/bin/dpkg; do
    [ ! -e "$root/$f" ] && [ ! -L "$root/$f" ] || die "$f present in the rootfs"
  done
}

import_rootfs() { # ROOT IMAGE [--change ...]... : imports :latest and :nonroot
  local root=$1 image=$2; shift 2
  local tarball="$work/rootfs.tar"
  tar -C "$root" --sort=name --numeric-owner --mtime="@$epoch" -cf "$tarball" .
  local env_path='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  "$DOCKER" import --change "$env_path" \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 0' --change 'WORKDIR /' "$@" \
    --message "appbin local base $image (from Debian packages)" \
    "$tarball" "$image:latest" >/dev/null
  "$DOCKER" import --change "$env_path" \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532' --change 'WORKDIR /home/nonroot' "$@" \
    --message "appbin local base $image:nonroot (from Debian packages)" \
    "$tarball" "$image:nonroot" >/dev/null
  rm -f "$tarball"
}

# --- checks on the images themselves ----------------------------------------
probe_src=$(cat <<'EOF'
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef WITH_SSL
#include <openssl/crypto.h>
#endif
int main(void) {
  struct passwd *pw = getpwuid(getuid());
  const char *ca = getenv("SSL_CERT_FILE");
  char cwd[256];
  if (!getcwd(cwd, sizeof cwd)) return 10;
  if (!pw) { puts("no passwd entry"); return 11; }
  if (!ca || access(ca, R_OK) != 0) { puts("no CA bundle"); return 12; }
  if (access("/bin/sh", F_OK) == 0 || access("/usr/bin/sh", F_OK) == 0) { puts("shell"); return 13; }
  if (access("/tmp", W_OK) != 0) { puts("/tmp not writable"); return 14; }
#ifdef WITH_SSL
  printf("%s ", OpenSSL_version(OPENSSL_VERSION));
#endif
  printf("user=%s uid=%d cwd=%s\n", pw->pw_name, (int)getuid(), cwd);
  return 0;
}
EOF
)
probe_cc_src='#include <iostream>
#include <string>
int main() { std::string s("libstdc++"); std::cout << s << " ok" << std::endl; return 0; }'

probes_built=0
build_probes() {
  [ $probes_built = 1 ] && return
  printf '%s\n' "$probe_src" > "$work/probe.c"
  printf '%s\n' "$probe_cc_src" > "$work/probe.cc"
  cc -O2 -static -o "$work/probe-static" "$work/probe.c" 2>/dev/null ||
    die "cannot link a static probe (libc6-dev)"
  cc -O2 -DWITH_SSL -o "$work/probe-dyn" "$work/probe.c" -lcrypto ||
    die "cannot link the dynamic probe (libssl-dev)"
  cc -O2 -o "$work/probe-nossl" "$work/probe.c" || die "cannot link the glibc-only probe"
  c++ -O2 -o "$work/probe-cc" "$work/probe.cc" || die "cannot link the C++ probe"
  chmod 0755 "$work"/probe-*
  chmod 0755 "$work"
  probes_built=1
}

run_probe() { # IMAGE PROBE [ARGS] -> output; the probe is bind-mounted read-only
  local image=$1 probe=$2; shift 2
  "$DOCKER" run --rm --network none -v "$work/$probe:/probe:ro" --entrypoint /probe "$image" "$@"
}

# The image's own dynamic loader's view of the probe's libraries (read whole:
# `docker run | grep -q` under pipefail failed when grep's early exit cut
# docker's output, SIGPIPE).
resolved_by() { # IMAGE
  "$DOCKER" run --rm --network none -v "$work/probe-dyn:/probe:ro" \
    --entrypoint /lib64/ld-linux-x86-64.so.2 "$1:latest" --list /probe 2>&1 || true
}

verify_image() { # SHORTNAME KIND(static|nossl|base|cc|python|builder)
  local name=$1 kind=$2 img="appbin/$1" out
  if [ "$kind" = builder ]; then
    out=$("$DOCKER" run --rm --network none "$img:latest" sh -c \
      '. /etc/os-release; echo "$PRETTY_NAME, deb-src: $(grep -c deb-src /etc/apt/sources.list.d/debian.sources)"')
    log "  $img: $out"
    return
  fi
  build_probes
  # No shell, no package manager: look at the exported filesystem itself.
  local cid listing
  cid=$("$DOCKER" create "$img:latest" /nonexistent)
  listing=$("$DOCKER" export "$cid" | tar -t)
  "$DOCKER" rm -v "$cid" >/dev/null
  if grep -Eqx '(\./)?(usr/)?bin/(sh|bash|dash|apt|apt-get|dpkg)' <<<"$listing"; then
    die "$img has a shell or a package manager"
  fi
  if "$DOCKER" run --rm --network none --entrypoint /bin/sh "$img:latest" -c true >/dev/null 2>&1; then
    die "$img runs /bin/sh"
  fi
  local files; files=$(grep -vc '/$' <<<"$listing")
  case $kind in
    static) out=$(run_probe "$img:nonroot" probe-static) ;;
    nossl)
      if grep -q 'libcrypto.so.3 => /' <<<"$(resolved_by "$img")"; then die "$img has libcrypto"; fi
      out=$(run_probe "$img:nonroot" probe-nossl) ;;
    *) # the image's own dynamic loader resolves the probe's libraries
       grep -q 'libcrypto.so.3 => /' <<<"$(resolved_by "$img")" ||
         die "$img: ld.so cannot resolve libcrypto.so.3"
       out=$(run_probe "$img:nonroot" probe-dyn) ;;
  esac
  grep -q 'user=nonroot uid=65532 cwd=/home/nonroot' <<<"$out" || die "$img:nonroot probe said: $out"
  local root_probe=probe-dyn
  case $kind in static) root_probe=probe-static ;; nossl) root_probe=probe-nossl ;; esac
  out=$out" | "$(run_probe "$img:latest" "$root_probe")
  grep -q 'user=root uid=0 cwd=/$' <<<"$out" || die "$img:latest probe said: $out"
  if [ "$kind" = cc ] || [ "$kind" = python ]; then
    out=$out" | "$(run_probe "$img:nonroot" probe-cc)
  fi
  if [ "$kind" = python ]; then
    out=$out" | "$("$DOCKER" run --rm --network none "$img:nonroot" -c \
      'import ssl, sqlite3, ctypes, zlib, lzma, bz2, sys; print("python", sys.version.split()[0], ssl.OPENSSL_VERSION)')
  fi
  log "  $img: no shell, $files files; $out"
}

# --- builders -----------------------------------------------------------------
build_builder() { # VERSION(12|13) SUITE
  local ver=$1 suite=$2 img=appbin/builder-debian$1 root="$work/rootfs"
  mkdir -p "$cache/debootstrap-$suite"
  log "debootstrap $suite (minbase)"
  debootstrap --variant=minbase --cache-dir="$cache/debootstrap-$suite" \
    --keyring="$keyring" "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -f "$root/etc/apt/sources.list"
  cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb deb-src
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: $sec_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # What Debian's official container image adds to a minbase debootstrap.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 0755 "$root/usr/sbin/policy-rc.d"
  cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/var/log/* "$root"/dev/* "$root"/proc/* "$root"/sys/* "$root"/run/* "$root"/tmp/*
  mkdir -p "$root/var/lib/apt/lists/partial"
  tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
  "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' --message "appbin local Debian $ver builder (debootstrap minbase)" \
    "$work/rootfs.tar" "$img:latest" >/dev/null
  rm -rf "$root" "$work/rootfs.tar"
}

build_distroless() { # SHORTNAME VERSION SUITE KIND PKG...
  local name=$1 ver=$2 suite=$3 kind=$4; shift 4
  local root="$work/rootfs-$name" changes=()
  distroless_rootfs "$root" "$ver" "$suite" "$@"
  if [ "$kind" = python ]; then
    local py; py=$([ "$ver" -ge 13 ] && echo python3.13 || echo python3.11)
    ln -sf "$py" "$root/usr/bin/python3"
    ln -sf "$py" "$root/usr/bin/python"
    changes=(--change "ENTRYPOINT [\"/usr/bin/$py\"]")
  fi
  import_rootfs "$root" "appbin/$name" "${changes[@]}"
  rm -rf "$root"
}

kind_of() {
  case $1 in
    builder-*) echo builder ;; *-static-*) echo static ;; *-base-nossl-*) echo nossl ;;
    *-base-*) echo base ;;
    *-cc-*) echo cc ;; *-python3-*) echo python ;;
  esac
}

for name in "${wanted[@]}"; do
  img=appbin/$name
  tags=("$img:latest"); [[ "$name" = builder-* ]] || tags+=("$img:nonroot")
  have=1; for t in "${tags[@]}"; do image_exists "$t" || have=0; done
  if [ $have = 1 ] && [ $force = 0 ]; then
    log "$img exists (skipped; --force rebuilds)"
    continue
  fi
  start=$(date +%s)
  log "building $img"
  case $name in
    builder-debian12) build_builder 12 bookworm ;;
    builder-debian13) build_builder 13 trixie ;;
    distroless-static-debian13) build_distroless "$name" 13 trixie static "${static13[@]}" ;;
    distroless-base-nossl-debian13)
      build_distroless "$name" 13 trixie base-nossl "${base_nossl13[@]}" ;;
    distroless-base-debian13) build_distroless "$name" 13 trixie base "${base13[@]}" ;;
    distroless-cc-debian13) build_distroless "$name" 13 trixie cc "${cc13[@]}" ;;
    distroless-static-debian12) build_distroless "$name" 12 bookworm static "${static12[@]}" ;;
    distroless-base-debian12) build_distroless "$name" 12 bookworm base "${base12[@]}" ;;
    distroless-cc-debian12) build_distroless "$name" 12 bookworm cc "${cc12[@]}" ;;
    distroless-python3-debian12) build_distroless "$name" 12 bookworm python "${python12[@]}" ;;
    distroless-python3-debian13) build_distroless "$name" 13 trixie python "${python13[@]}" ;;
  esac
  [ $verify = 1 ] && verify_image "$name" "$(kind_of "$name")"
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$img:latest")
  log "built $img in $(( $(date +%s) - start ))s, $(( size / 1000 )) kB"
done
