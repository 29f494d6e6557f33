/* A stand-in for libcublas, compiled by the host C compiler for the tests (stub_cublas.py).

   What dnn.backends.cublas calls, with cuBLAS's signatures and statuses: create a handle, set
   its stream (which, as cuBLAS documents, puts the workspace back on the default pool), set its
   workspace, cublasGetProperty, and S/D gemm over host memory, column-major, alpha and beta read
   from the host (cuBLAS's default pointer mode), the leading dimensions checked as cuBLAS
   checks them.  STUB_MAJOR is the major version it reports.

   A stream is what the test stand-in of CuPy (tests/standin/cupy) makes of one: a pointer to a
   struct standin_stream, whose launch() runs a kernel on it now and, while the stream is being
   captured, records it into the graph.  A gemm on the legacy default stream (NULL) runs at
   once.  stub_gemm_count() and stub_gemm_workspace(i) tell the tests which workspace was in
   force at each gemm (NULL: the default pool). */

#include <stddef.h>
#include <stdlib.h>

enum { SUCCESS = 0, NOT_INITIALIZED = 1, ALLOC_FAILED = 3, INVALID_VALUE = 7,
       EXECUTION_FAILED = 13 };
enum { OP_N = 0, OP_T = 1 };
enum { MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2 };

typedef void (*stub_kernel)(const void *args);

struct standin_stream {
    int (*launch)(stub_kernel kernel, const void *args, size_t size);
};

struct handle {
    struct standin_stream *stream;
    void *workspace;
    size_t workspace_size;
};

struct gemm {
    int transa, transb, m, n, k, lda, ldb, ldc;
    double alpha, beta;
    const void *a, *b;
    void *c;
};

#define LOGGED 100000
static void *workspace_log[LOGGED];
static size_t gemms;

size_t stub_gemm_count(void) { return gemms; }

void *stub_gemm_workspace(size_t index) { return index < LOGGED ? workspace_log[index] : NULL; }

int cublasGetProperty(int type, int *value)
{
    if (!value)
        return INVALID_VALUE;
    *value = type == MAJOR_VERSION ? STUB_MAJOR : 0;
    return SUCCESS;
}

int cublasCreate_v2(struct handle **handle)
{
    *handle = calloc(1, sizeof **handle);
    return *handle ? SUCCESS : ALLOC_FAILED;
}

int cublasDestroy_v2(struct handle *handle)
{
    free(handle);
    return SUCCESS;
}

int cublasSetStream_v2(struct handle *handle, struct standin_stream *stream)
{
    if (!handle)
        return NOT_INITIALIZED;
    handle->stream = stream;
    handle->workspace = NULL; /* "unconditionally resets the workspace to the default pool" */
    handle->workspace_size = 0;
    return SUCCESS;
}

int cublasSetWorkspace_v2(struct handle *handle, void *workspace, size_t size)
{
    if (!handle)
        return NOT_INITIALIZED;
    if (size && !workspace)
        return INVALID_VALUE;
    handle->workspace = workspace;
    handle->workspace_size = size;
    return SUCCESS;
}

/* C = alpha op(A) op(B) + beta C, column-major; C is not read where beta is 0. */
#define GEMM_KERNEL(NAME, T)                                                                   \
    static void NAME(const void *args)                                                         \
    {                                                                                          \
        const struct gemm *g = args;                                                           \
        const T *a = g->a, *b = g->b;                                                          \
        T *c = g->c, alpha = (T)g->alpha, beta = (T)g->beta;                                   \
        for (ptrdiff_t j = 0; j < g->n; ++j)                                                   \
            for (ptrdiff_t i = 0; i < g->m; ++i) {                                             \
                T sum = 0;                                                                     \
                for (ptrdiff_t p = 0; p < g->k; ++p)                                           \
                    sum += (g->transa == OP_N ? a[i + p * g->lda] : a[p + i * g->lda])         \
                           * (g->transb == OP_N ? b[p + j * g->ldb] : b[j + p * g->ldb]);      \
                T *out = &c[i + j * g->ldc];                                                   \
                *out = beta == 0 ? alpha * sum : alpha * sum + beta * *out;                    \
            }                                                                                  \
    }

GEMM_KERNEL(sgemm_kernel, float)
GEMM_KERNEL(dgemm_kernel, double)

static int max1(int value) { return value > 1 ? value : 1; }

static int gemm(struct handle *handle, stub_kernel kernel, const struct gemm *g)
{
    if (!handle)
        return NOT_INITIALIZED;
    if ((g->transa != OP_N && g->transa != OP_T) || (g->transb != OP_N && g->transb != OP_T)
        || g->m < 0 || g->n < 0 || g->k < 0
        || g->lda < max1(g->transa == OP_N ? g->m : g->k)
        || g->ldb < max1(g->transb == OP_N ? g->k : g->n) || g->ldc < max1(g->m))
        return INVALID_VALUE;
    if (gemms < LOGGED)
        workspace_log[gemms] = handle->workspace;
    ++gemms;
    if (!handle->stream) {
        kernel(g);
        return SUCCESS;
    }
    return handle->stream->launch(kernel, g, sizeof *g) ? EXECUTION_FAILED : SUCCESS;
}

int cublasSgemm_v2(struct handle *handle, int transa, int transb, int m, int n, int k,
                   const float *alpha, const float *a, int lda, const float *b, int ldb,
                   const float *beta, float *c, int ldc)
{
    struct gemm g = {transa, transb, m, n, k, lda, ldb, ldc, *alpha, *beta, a, b, c};
    return gemm(handle, sgemm_kernel, &g);
}

int cublasDgemm_v2(struct handle *handle, int transa, int transb, int m, int n, int k,
                   const double *alpha, const double *a, int lda, const double *b, int ldb,
                   const double *beta, double *c, int ldc)
{
    struct gemm g = {transa, transb, m, n, k, lda, ldb, ldc, *alpha, *beta, a, b, c};
    return gemm(handle, dgemm_kernel, &g);
}
