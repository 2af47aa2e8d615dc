/* Test-only LD_PRELOAD shim for the sanlock daemon.
 *
 * sanlock's daemon raises RLIMIT_MEMLOCK and RLIMIT_RTPRIO to infinity at
 * start and exits when it may not. In a sandbox without CAP_SYS_RESOURCE
 * that always fails, so this shim retries a refused setrlimit() with the
 * request clamped to the current hard limit. Nothing else changes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/resource.h>

typedef int (*setrlimit_fn)(__rlimit_resource_t, const struct rlimit *);

int setrlimit(__rlimit_resource_t resource, const struct rlimit *limit)
{
    setrlimit_fn real = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit");
    struct rlimit hard, clamped;

    if (real(resource, limit) == 0)
        return 0;
    if (getrlimit(resource, &hard) != 0)
        return -1;
    clamped = *limit;
    if (clamped.rlim_max > hard.rlim_max)
        clamped.rlim_max = hard.rlim_max;
    if (clamped.rlim_cur > clamped.rlim_max)
        clamped.rlim_cur = clamped.rlim_max;
    return real(resource, &clamped);
}
