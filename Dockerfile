# appbin: build an ASGI app into ONE executable (/app.bin) and ship it on a
# distroless base: no Python, no shell, no package manager in the final image.
#
#   DOCKER_BUILDKIT=1 docker build -t my-app .
#   docker run --rm --read-only --cap-drop ALL -p 8000:8000 my-app
#   docker run --rm my-app python -c 'print(1+1)'   # the bundled interpreter
#
# Needs BuildKit (cache mounts, COPY --chmod) and nothing newer than Docker
# 20.10's built-in Dockerfile frontend: no "# syntax=" line (it would pull an
# image), no heredocs, no COPY --exclude/--link, octal --chmod only.
#
# Build arguments:
#   PYTHON_VERSION the app's Python: 3.13 (default), 3.14 or 3.11. 3.11 is
#                  Debian 12's libpython3.11; 3.13 and 3.14 are built from
#                  Debian's CPython sources by cpython-patches/build-cpython.sh
#                  (minutes on two cores the first time, then reused from a
#                  BuildKit cache mount). The venv is made by that Python.
#   BUILDER_IMAGE  a Debian 12 image with apt (default debian:12)
#   FINAL_IMAGE    the runtime base (default distroless base-nossl-debian13:nonroot,
#                  glibc only; any glibc >= 2.36 base works, e.g. base-debian12)
#   PACK_OPTIONS   more appbin-pack options (default "--system-lib none": app.bin
#                  carries its own libssl, libcrypto and zlib, which base-nossl
#                  lacks; pass PACK_OPTIONS= to use those of a base that has
#                  them, such as base-debian13, and get its OpenSSL updates)
#   PIP_INDEX_URL  package index for pip (a mirror); Poetry reads the sources
#                  in the project's pyproject.toml/poetry.lock
#   PROJECT_DIR    the app's project in the build context (default examples)
#   APP            the ASGI application, module:attribute
#   PORT           the port served and health-checked (APPBIN_PORT) and EXPOSEd
#   APT_MIRROR     replaces http://deb.debian.org/debian in the builder's apt
#                  sources (optional; debian-security is left as it is)
#
# Behind a TLS-inspecting proxy, give the build your CA bundle as a secret (it
# is used by pip and Poetry only, and lands in no layer):
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
ARG BUILDER_IMAGE=debian:12
ARG FINAL_IMAGE=gcr.io/distroless/base-nossl-debian13:nonroot
ARG PYTHON_VERSION=3.13

# --- builder: Debian 12 with apt downloads kept in a cache mount --------------
FROM ${BUILDER_IMAGE} AS builder
ARG APT_MIRROR=
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN rm -f /etc/apt/apt.conf.d/docker-clean \
 && echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache \
 && if [ -n "$APT_MIRROR" ]; then \
      sed -i -E "s#http://deb.debian.org/debian([[:space:]]|\$)#$APT_MIRROR\1#" \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; \
    fi

# --- host-deps: compilers, static libraries ----------------------------------
FROM builder AS host-deps
WORKDIR /src
COPY tests/apt-packages.txt tests/setup.sh /src/tests/
# tests/setup.sh --deps-only installs the build's apt packages (those above the
# test tools in tests/apt-packages.txt).
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    apt-get update -qq \
 && bash tests/setup.sh --deps-only

# --- python: the CPython the host embeds, at /opt/python -----------------------
# 3.11: Debian's (/opt/python -> /usr). 3.13/3.14: built from Debian's source
# package in the cache mount, then copied out of it to the same path (its
# sysconfig names that path) with /opt/python pointing there. pip gets the
# CA bundle for the packer's zstandard.
FROM host-deps AS python
ARG PYTHON_VERSION
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY cpython-patches /src/cpython-patches
RUN --mount=type=cache,target=/root/.cache/appbin \
    --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    case "$PYTHON_VERSION" in \
      3.11) ln -s /usr /opt/python ;; \
      3.13|3.14) prefix=$(bash /src/cpython-patches/build-cpython.sh "$PYTHON_VERSION" | tail -n 1) \
        && test -x "$prefix/bin/python$PYTHON_VERSION" \
        && cp -a "$prefix" /opt/python.build && echo "$prefix" > /opt/python.prefix \
        && rm -f /etc/apt/sources.list.d/appbin-cpython-src.sources ;; \
      *) echo "PYTHON_VERSION=$PYTHON_VERSION: 3.11, 3.13 or 3.14" >&2; exit 1 ;; \
    esac
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates.crt \
    if [ -s /run/secrets/ca-certificates.crt ]; then export PIP_CERT=/run/secrets/ca-certificates.crt; fi \
 && if [ -f /opt/python.prefix ]; then \
      prefix=$(cat /opt/python.prefix) && mkdir -p "$(dirname "$prefix")" \
      && mv /opt/python.build "$prefix" && ln -s "$prefix" /opt/python \
      && PIP_INDEX_URL="$PIP_INDEX_URL" /opt/python/bin/python$PYTHON_VERSION -I -m pip install -q \
           --disable-pip-version-check --no-warn-script-location "zstandard==0.25.0"; \
    fi \
 && /opt/python/bin/python$PYTHON_VERSION -I -c "import sys, zstandard; print(sys.version)"

# --- host: the appbin host executable and the packager ----------------------
FROM python AS host
ARG PYTHON_VERSION
COPY CMakeLists.txt /src/
COPY host /src/host
COPY packager /src/packager
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAPPBIN_HOST_ONLY=ON \
      -DAPPBIN_PYTHON="/opt/python/bin/python$PYTHON_VERSION" >/dev/null \
 && cmake --build /build --target appbin-host \
 && test -x /build/appbin-pack

# --- venv: the app and its dependencies, as the app's own tooling makes them --
# Poetry runs on Debian's python3.11 (host-deps has it); the venv is made by
# the host's Python.
FROM python AS venv
ARG PYTHON_VERSION
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG POETRY_SPEC="poetry>=2,<3"
ARG POETRY_BUNDLE_SPEC="poetry-plugin-bundle>=1.6"
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates.crt \
    if [ -s /run/secrets/ca-certificates.crt ]; then export PIP_CERT=/run/secrets/ca-certificates.crt; fi \
 && /usr/bin/python3.11 -m venv /opt/poetry \
 && PIP_INDEX_URL="$PIP_INDEX_URL" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/poetry/bin/pip install -q "$POETRY_SPEC" "$POETRY_BUNDLE_SPEC"
ARG PROJECT_DIR=examples
COPY ${PROJECT_DIR}/ /project/
WORKDIR /project
# poetry.lock: the venv Poetry bundles (main group only, no pip in it);
# requirements.txt without a lock: pip; anything else pip can install: pip.
RUN --mount=type=cache,target=/root/.cache/pypoetry \
    --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates.crt \
    if [ -s /run/secrets/ca-certificates.crt ]; then \
      export PIP_CERT=/run/secrets/ca-certificates.crt \
             REQUESTS_CA_BUNDLE=/run/secrets/ca-certificates.crt \
             SSL_CERT_FILE=/run/secrets/ca-certificates.crt; \
    fi \
 && export PIP_INDEX_URL="$PIP_INDEX_URL" PIP_DISABLE_PIP_VERSION_CHECK=1 POETRY_NO_INTERACTION=1 \
      PY="/opt/python/bin/python$PYTHON_VERSION" \
 && if [ -f poetry.lock ]; then \
      POETRY_VIRTUALENVS_OPTIONS_NO_PIP=true \
      /opt/poetry/bin/poetry bundle venv --python="$PY" --only=main /venv; \
    elif [ -f requirements.txt ]; then \
      "$PY" -m venv /venv \
      && /venv/bin/pip install -q -r requirements.txt \
      && /venv/bin/pip install -q --no-deps . \
      && /venv/bin/pip uninstall -q -y pip; \
    else \
      "$PY" -m venv /venv \
      && /venv/bin/pip install -q . \
      && /venv/bin/pip uninstall -q -y pip; \
    fi

# --- app: pack the venv into /app.bin with the host built above --------------
FROM host AS app
COPY --from=venv /venv /venv
ARG APP=my_package.web:app
ARG PACK_OPTIONS="--system-lib none"
RUN /build/appbin-pack --venv /venv --app "$APP" -o /app.bin $PACK_OPTIONS \
 && /app.bin python -c "import sys; print('app.bin', sys.version.split()[0])"

# --- final: one file on a distroless base --------------------------------------
FROM ${FINAL_IMAGE} AS final
COPY --from=app --chown=0:65532 --chmod=0550 /app.bin /app.bin
USER 65532:65532
ARG PORT=8000
# The port goes through the environment so that the server and the health
# check (a second app.bin process) agree: docker run -e APPBIN_PORT=9000 ...
# The health check GETs /health (change with -e APPBIN_HEALTH_PATH=/path).
ENV APPBIN_PORT=${PORT}
EXPOSE ${PORT}
ENTRYPOINT ["/app.bin"]
CMD ["--host", "0.0.0.0"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/app.bin", "healthcheck"]
