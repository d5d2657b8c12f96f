// Stand-in for the header a CUDA build of torch generates (CPU wheels lack it). Used only by `make cuda-check`,
// which syntax-checks the CUDA bindings against a CPU torch's headers; never part of a real build.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
