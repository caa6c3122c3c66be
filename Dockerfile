# Container image of twin-server (entry point), twin-merge, twin-inspect and twin-client.
#
#   docker build -t twin-merging:0.1.0 .                         # VARIANT=cpu (default)
#   docker build -t twin-merging:0.1.0-cuda --build-arg VARIANT=cuda \
#       --build-arg TORCH_DIR=third_party/libtorch .             # see "CUDA variant" below
#
# Needs BuildKit (the default builder since Docker 23): only the stages the chosen VARIANT
# reaches are built, and the ccache directory is a cache mount.
#
# VARIANT=cpu   Debian 12's LibTorch 1.13 (CPU, OpenBLAS). Complete and self-contained.
# VARIANT=cuda  Debian has no CUDA build of LibTorch, so bring one: unpack a CUDA LibTorch
#               (C++11 ABI, "cxx11-abi" shared-with-deps archive; the code targets the 1.13
#               API, so 1.13.1+cu117 is the matching one) inside the build context and name
#               it with TORCH_DIR. CMake gets -DTorch_DIR pointing into it, the CUDA toolkit
#               that LibTorch's CMake files ask for comes from Debian's non-free
#               nvidia-cuda-toolkit, and the runtime stage copies LibTorch's lib/ (which
#               carries the CUDA runtime, cuBLAS and cuDNN) instead of Debian's libtorch1.13.
#               The driver comes from the host through the NVIDIA container toolkit.
#
# Runs as uid/gid 10001 with nothing writable in the image: mount the cache directory
# (server.yaml cache_dir, default here /var/cache/twin) and /tmp as volumes when the root
# filesystem is read-only.

ARG VARIANT=cpu
ARG DEBIAN_IMAGE=debian:12

# ---------------------------------------------------------------------------------------
# Build: the -dev packages from scripts/install-deps.sh (--build: no test tools, no Node.js),
# then a Release build of the four binaries only (no tests).
FROM ${DEBIAN_IMAGE} AS build-base
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --build && rm -rf /var/lib/apt/lists/*

FROM build-base AS build-cpu
# Debian's libtorch-dev (from install-deps.sh) is the LibTorch of this variant.
ENV TWIN_TORCH_CMAKE_ARGS=""

FROM build-base AS build-cuda
# Path inside the build context of an unpacked CUDA LibTorch (the folder holding lib/,
# include/ and share/cmake/Torch).
ARG TORCH_DIR=third_party/libtorch
# LibTorch's CMake config looks for a CUDA toolkit (nvcc, headers) at configure time.
ARG CUDA_TOOLKIT_PACKAGES=nvidia-cuda-toolkit
RUN sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' \
        /etc/apt/sources.list.d/debian.sources \
    && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ${CUDA_TOOLKIT_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*
COPY ${TORCH_DIR}/ /opt/libtorch/
ENV TWIN_TORCH_CMAKE_ARGS="-DTorch_DIR=/opt/libtorch/share/cmake/Torch -DCMAKE_PREFIX_PATH=/opt/libtorch"

FROM build-${VARIANT} AS build
WORKDIR /src
# Only what the build reads, so that unrelated files (and a LibTorch in the context) do not
# invalidate the layer or travel into /src.
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY proto/ proto/
COPY core/ core/
COPY merge_offline/ merge_offline/
COPY server/ server/
COPY client/ client/
COPY bench/ bench/
RUN --mount=type=cache,target=/root/.cache/ccache \
    CCACHE_DIR=/root/.cache/ccache cmake -S . -B build -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DTWIN_BUILD_TESTS=OFF ${TWIN_TORCH_CMAKE_ARGS} \
    && CCACHE_DIR=/root/.cache/ccache cmake --build build \
        --target twin-server twin-merge twin-client twin-inspect \
    && mkdir -p /out/bin \
    && cp build/bin/twin-server build/bin/twin-merge build/bin/twin-client \
        build/bin/twin-inspect /out/bin/ \
    && strip --strip-unneeded /out/bin/*

# ---------------------------------------------------------------------------------------
# Runtime: the shared libraries the binaries link, nothing else.
FROM ${DEBIAN_IMAGE} AS runtime-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends \
        ca-certificates \
        libabsl20220623 \
        libgrpc++1.51 libgrpc29 libprotobuf32 \
        libprometheus-cpp-core1.0 \
        libyaml-cpp0.7 libicu72 \
        libcurl4 libssl3 \
    && rm -rf /var/lib/apt/lists/*

FROM runtime-base AS runtime-cpu
# libtorch1.13 is Debian's runtime package of libtorch-dev; libopenblas0-pthread is named so
# that it (not the reference BLAS) provides libblas.so.3 / liblapack.so.3.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends libtorch1.13 libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*

FROM runtime-base AS runtime-cuda
COPY --from=build /opt/libtorch/lib/ /opt/libtorch/lib/
RUN echo /opt/libtorch/lib > /etc/ld.so.conf.d/libtorch.conf && ldconfig
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${VARIANT} AS runtime
ARG VERSION=0.1.0
ARG VARIANT
ARG SOURCE_URL=https://example.invalid/twin-merging
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="twin-merging" \
      org.opencontainers.image.description="Twin-Merging inference: twin-server (gRPC), twin-merge, twin-inspect, twin-client (${VARIANT})" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}"

RUN groupadd --gid 10001 twin \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/twin \
        --no-create-home --shell /usr/sbin/nologin twin \
    && mkdir -p /etc/twin /var/lib/twin/store /var/cache/twin \
    && chown 10001:10001 /var/lib/twin /var/lib/twin/store /var/cache/twin
COPY --from=build /out/bin/ /usr/local/bin/
# Serves a file:// store mounted at /var/lib/twin/store; Kubernetes mounts its own config.
COPY deploy/docker/server.yaml /etc/twin/server.yaml

# One BLAS thread per LibTorch thread: LibTorch parallelises over its own pool, and nested
# OpenBLAS threads oversubscribe the cores.
ENV OPENBLAS_NUM_THREADS=1
USER 10001:10001
WORKDIR /var/lib/twin
EXPOSE 50051 9090

# twin-client exits 0 only for SERVING; the server reports NOT_SERVING until the artifact
# set is verified and warmed up, hence the long start period. twin-client loads LibTorch
# at start (about half a second), so the check's own timeout is well above the RPC's.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["twin-client", "--target", "127.0.0.1:50051", "--timeout_ms", "2000", "health"]

# twin-server handles SIGTERM itself (it blocks the signal and waits for it on a thread), so
# it can run as PID 1: it reports NOT_SERVING, answers what it accepted, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["twin-server"]
CMD ["--config", "/etc/twin/server.yaml"]
