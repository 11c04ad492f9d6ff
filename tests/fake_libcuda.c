/* A stand-in for the NVIDIA driver's libcuda.so.1, built by tests/test_gpu.py with gcc.
 *
 * It exports the two driver API calls hpcenv.gpu uses, with the real signatures:
 *   CUresult cuInit(unsigned int flags);
 *   CUresult cuDriverGetVersion(int *driverVersion);
 * Behaviour is chosen at compile time:
 *   -DFAKE_VERSION=12040   what cuDriverGetVersion stores (1000 * major + 10 * minor)
 *   -DFAKE_INIT_RESULT=100 what cuInit returns (100 is CUDA_ERROR_NO_DEVICE)
 *   -DFAKE_VERSION_RESULT=1 what cuDriverGetVersion returns (1 is CUDA_ERROR_INVALID_VALUE)
 *   -DFAKE_WITHOUT_GET_VERSION  leave cuDriverGetVersion out
 * Like the real driver, cuInit fails with CUDA_ERROR_NO_DEVICE when CUDA_VISIBLE_DEVICES is
 * set but empty.
 */
#include <stdlib.h>

#ifndef FAKE_VERSION
#define FAKE_VERSION 12040
#endif
#ifndef FAKE_INIT_RESULT
#define FAKE_INIT_RESULT 0
#endif
#ifndef FAKE_VERSION_RESULT
#define FAKE_VERSION_RESULT 0
#endif

#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_NO_DEVICE 100

int cuInit(unsigned int flags) {
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    (void)flags;
    if (visible != NULL && visible[0] == '\0') {
        return CUDA_ERROR_NO_DEVICE;
    }
    return FAKE_INIT_RESULT;
}

#ifndef FAKE_WITHOUT_GET_VERSION
int cuDriverGetVersion(int *driverVersion) {
    if (driverVersion == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    *driverVersion = FAKE_VERSION;
    return FAKE_VERSION_RESULT;
}
#endif
