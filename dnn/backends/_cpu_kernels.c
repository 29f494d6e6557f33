/* Fused float32 kernels for the cpu backend: one pass over memory where NumPy needs one pass
 * per operation.
 *
 * Each loop computes the same expression, in the same order of operations and with the same
 * float32 roundings, as the generic kernel it serves in dnn/backends/base.py (sums add in
 * NumPy's order, pairwise where NumPy sums pairwise; exp and log stay NumPy's own); setup.py
 * compiles it without contracting a*b+c into a fused multiply-add (-ffp-contract=off), so the
 * results are bit-for-bit those of NumPy, and tests/test_cpu_kernels.py pins them together.
 * Arrays are C-contiguous float32 buffers (checked here); scalars arrive already in the form the
 * generic kernel uses them (for example 1 - rho, computed by the caller in double precision).
 * Every loop runs with the GIL released.
 *
 * Three kernels only move data, for the products that leave out the columns of a batch that
 * are zero in every row (dnn/backends/cpu.py): nonzero_columns finds them, take_columns packs
 * the others, scatter_rows puts the rows of a product over them back in place.  They take int64
 * index arrays, checked to be increasing and in range before any loop reads through them.
 * add_rows adds rows into the rows an Embedding looked them up from (numpy.add.at's order),
 * its indices checked to be in range first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__cplusplus)
#define restrict __restrict  /* MSVC's C mode spells C99's restrict this way */
#endif

/* The float32 buffer of `object` with `count` elements (any count when count < 0), or -1 with a
 * Python exception naming `what`.  None gives an empty view (buf NULL) when `optional`. */
static int get_floats(PyObject *object, Py_buffer *view, const char *what, int writable,
                      int optional, Py_ssize_t count)
{
    view->obj = NULL;
    view->buf = NULL;
    if (optional && object == Py_None)
        return 0;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s float32 array", what,
                     writable ? ", writable" : "");
        return -1;
    }
    if (view->itemsize != 4 || strcmp(view->format, "f") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a float32 array, not format '%s'", what,
                     view->format);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    if (count >= 0 && view->len / 4 != count) {
        PyErr_Format(PyExc_ValueError, "%s has %zd elements, expected %zd", what, view->len / 4,
                     count);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* True when two (non-empty) views share memory. */
static int overlap(const Py_buffer *a, const Py_buffer *b)
{
    const char *x = a->buf, *y = b->buf;
    return x != NULL && y != NULL && x < y + b->len && y < x + a->len;
}

static void release_all(Py_buffer *views, int count)
{
    for (int i = 0; i < count; i++)
        if (views[i].obj != NULL)
            PyBuffer_Release(&views[i]);
}

/* Fill `views` from `objects` (the first one sets the element count); `spec` has one letter per
 * array: 'w' writable, 'r' read-only, 'o' optional writable (None allowed). */
static int get_all(PyObject **objects, Py_buffer *views, const char *const *names,
                   const char *spec)
{
    int count = (int)strlen(spec);
    Py_ssize_t length = -1;
    for (int i = 0; i < count; i++) {
        if (get_floats(objects[i], &views[i], names[i], spec[i] != 'r', spec[i] == 'o',
                       length) < 0) {
            release_all(views, i);
            return -1;
        }
        if (i == 0)
            length = views[0].len / 4;
        for (int j = 0; j < i; j++) {
            if (overlap(&views[i], &views[j])) {
                PyErr_Format(PyExc_ValueError, "%s and %s must not overlap", names[j], names[i]);
                release_all(views, i + 1);
                return -1;
            }
        }
    }
    return 0;
}

/* -- the arithmetic: plain loops over restrict pointers (the glue below checks that the arrays
 *    do not overlap), which GCC and Clang vectorise -------------------------------------------- */

/* On x86-64 Linux, GCC also compiles each loop for AVX2 and AVX-512 and picks the widest one the
 * CPU has when the module loads (the baseline SSE2 code is half as fast on the update of a
 * 784x512 kernel).  The clones round alike: none may contract into FMA, and sqrt and division
 * are correctly rounded in every instruction set. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static void sgd_loop(Py_ssize_t n, float *restrict p, const float *restrict g,
                     float *restrict v, float lr, float momentum, int nesterov)
{
    if (v == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            p[i] = p[i] - lr * g[i];
    } else if (nesterov) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float velocity = v[i] * momentum - lr * g[i];
            v[i] = velocity;
            p[i] = p[i] + (momentum * velocity - lr * g[i]);
        }
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            float velocity = v[i] * momentum - lr * g[i];
            v[i] = velocity;
            p[i] = p[i] + velocity;
        }
    }
}

VECTOR_CLONES
static void rmsprop_plain_loop(Py_ssize_t n, float *restrict p, const float *restrict g,
                               float *restrict ms, float lr, float rho, float one_minus_rho,
                               float eps)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float mean_square = ms[i] * rho + one_minus_rho * (g[i] * g[i]);
        ms[i] = mean_square;
        p[i] = p[i] - (lr * g[i]) / sqrtf(mean_square + eps);
    }
}

/* The centered and/or momentum variants (mg or buf non-NULL). */
VECTOR_CLONES
static void rmsprop_variant_loop(Py_ssize_t n, float *restrict p, const float *restrict g,
                                 float *restrict ms, float *restrict mg, float *restrict buf,
                                 float lr, float rho, float one_minus_rho, float momentum,
                                 float eps)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float mean_square = ms[i] * rho + one_minus_rho * (g[i] * g[i]);
        ms[i] = mean_square;
        float denominator = mean_square;
        if (mg != NULL) {
            float mean_grad = mg[i] * rho + one_minus_rho * g[i];
            mg[i] = mean_grad;
            denominator = mean_square - mean_grad * mean_grad;
        }
        float step = (lr * g[i]) / sqrtf(denominator + eps);
        if (buf != NULL) {
            step = buf[i] * momentum + step;
            buf[i] = step;
        }
        p[i] = p[i] - step;
    }
}

VECTOR_CLONES
static void adam_loop(Py_ssize_t n, float *restrict p, const float *restrict g,
                      float *restrict m, float *restrict v, float alpha, float one_minus_beta_1,
                      float one_minus_beta_2, float eps)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float first = m[i] + (g[i] - m[i]) * one_minus_beta_1;
        float second = v[i] + (g[i] * g[i] - v[i]) * one_minus_beta_2;
        m[i] = first;
        v[i] = second;
        p[i] = p[i] - (alpha * first) / (sqrtf(second) + eps);
    }
}

/* z (rows, units) = maximum(z + bias, 0); NaN stays NaN, as in numpy.maximum. */
VECTOR_CLONES
static void bias_relu_loop(Py_ssize_t rows, Py_ssize_t units, float *restrict z,
                           const float *restrict bias)
{
    for (Py_ssize_t row = 0; row < rows; row++) {
        float *restrict out = z + row * units;
        for (Py_ssize_t j = 0; j < units; j++) {
            float value = out[j] + bias[j];
            out[j] = (value > 0.0f || value != value) ? value : 0.0f;
        }
    }
}

VECTOR_CLONES
static void relu_backward_loop(Py_ssize_t n, float *restrict grad, const float *restrict out)
{
    for (Py_ssize_t i = 0; i < n; i++)
        grad[i] = out[i] > 0.0f ? grad[i] : 0.0f;
}

/* -- reductions in NumPy's order of additions, so that the sums round as NumPy's do ---------- */

/* NumPy's pairwise summation of n contiguous floats (numpy/_core/src/umath/loops_utils.h):
 * below 8 a plain loop from -0, up to 128 eight interleaved partial sums, above that halves. */
static float pairwise_sum(const float *a, Py_ssize_t n)
{
    if (n < 8) {
        float sum = -0.0f;
        for (Py_ssize_t i = 0; i < n; i++)
            sum += a[i];
        return sum;
    }
    if (n <= 128) {
        float r[8];
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        Py_ssize_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        float sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            sum += a[i];
        return sum;
    }
    Py_ssize_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

/* numpy.sum of n contiguous floats: the identity 0 plus the pairwise sum. */
static float numpy_sum(const float *a, Py_ssize_t n)
{
    return 0.0f + pairwise_sum(a, n);
}

/* out (units,) = numpy.sum(matrix (rows, units), axis=0): NumPy adds whole rows in order onto
 * zeros, except for a single column, which is one contiguous pairwise sum. */
VECTOR_CLONES
static void column_sum_loop(Py_ssize_t rows, Py_ssize_t units, const float *restrict matrix,
                            float *restrict out)
{
    if (units == 1) {
        out[0] = numpy_sum(matrix, rows);
        return;
    }
    for (Py_ssize_t j = 0; j < units; j++)
        out[j] = 0.0f;
    for (Py_ssize_t row = 0; row < rows; row++) {
        const float *restrict values = matrix + row * units;
        for (Py_ssize_t j = 0; j < units; j++)
            out[j] += values[j];
    }
}

/* -- softmax cross-entropy and accuracy over rows of `classes` logits ------------------------ */

/* shifted = logits - max(logits, axis=1).  Unlike numpy.max this skips NaN, which changes
 * nothing downstream: a NaN logit makes its row's exp sum NaN, so that row's gradient and loss
 * are NaN either way (the tests compare the bits). */
static void subtract_row_max_loop(Py_ssize_t rows, Py_ssize_t classes,
                                  const float *restrict logits, float *restrict shifted)
{
    for (Py_ssize_t row = 0; row < rows; row++) {
        const float *restrict in = logits + row * classes;
        float top = -INFINITY;
        for (Py_ssize_t j = 0; j < classes; j++) {
            if (in[j] > top)
                top = in[j];
        }
        for (Py_ssize_t j = 0; j < classes; j++)
            shifted[row * classes + j] = in[j] - top;
    }
}

/* total[row] = numpy.sum(exp[row]); grad = (exp / total - targets) / rows.  Returns
 * numpy.sum(targets * shifted), computed in `grad` before the gradient overwrites it. */
static float softmax_crossentropy_grad_loop(Py_ssize_t rows, Py_ssize_t classes,
                                            const float *restrict exp,
                                            const float *restrict targets,
                                            const float *restrict shifted, float *restrict total,
                                            float *restrict grad)
{
    Py_ssize_t size = rows * classes;
    for (Py_ssize_t i = 0; i < size; i++)
        grad[i] = targets[i] * shifted[i];
    float target_logit_sum = numpy_sum(grad, size);
    float count = (float)rows;
    for (Py_ssize_t row = 0; row < rows; row++) {
        Py_ssize_t start = row * classes;
        float row_total = numpy_sum(exp + start, classes);
        total[row] = row_total;
        for (Py_ssize_t j = start; j < start + classes; j++)
            grad[j] = (exp[j] / row_total - targets[j]) / count;
    }
    return target_logit_sum;
}

/* The first index of a row's largest value, or of its first NaN (numpy.argmax). */
static Py_ssize_t argmax(const float *values, Py_ssize_t count)
{
    Py_ssize_t best = 0;
    for (Py_ssize_t j = 0; j < count; j++) {
        if (values[j] != values[j])
            return j;
        if (values[j] > values[best])
            best = j;
    }
    return best;
}

static Py_ssize_t count_correct_loop(Py_ssize_t rows, Py_ssize_t classes,
                                     const float *output, const float *targets)
{
    Py_ssize_t correct = 0;
    for (Py_ssize_t row = 0; row < rows; row++)
        correct += argmax(output + row * classes, classes) ==
                   argmax(targets + row * classes, classes);
    return correct;
}

/* -- the columns of a batch that are not all zero, and the rows of a product over them ------- */

/* Writes to columns[0..count) the indices of the columns of x (rows, cols) holding a value
 * other than +0 and -0 (NaN counts), in increasing order, and returns count.  `seen` (cols,)
 * is scratch: a value's bits shifted left by one (dropping the sign) are 0 only for a zero. */
VECTOR_CLONES
static Py_ssize_t nonzero_columns_loop(Py_ssize_t rows, Py_ssize_t cols,
                                       const uint32_t *restrict x, uint32_t *restrict seen,
                                       int64_t *restrict columns)
{
    for (Py_ssize_t j = 0; j < cols; j++)
        seen[j] = 0;
    for (Py_ssize_t row = 0; row < rows; row++) {
        const uint32_t *restrict values = x + row * cols;
        for (Py_ssize_t j = 0; j < cols; j++)
            seen[j] |= values[j] << 1;
    }
    Py_ssize_t count = 0;
    for (Py_ssize_t j = 0; j < cols; j++) {
        if (seen[j] != 0)
            columns[count++] = j;
    }
    return count;
}

/* out (rows, count) = x (rows, cols)[:, columns]. */
static void take_columns_loop(Py_ssize_t rows, Py_ssize_t cols, const float *restrict x,
                              Py_ssize_t count, const int64_t *restrict columns,
                              float *restrict out)
{
    for (Py_ssize_t row = 0; row < rows; row++) {
        const float *restrict values = x + row * cols;
        float *restrict packed = out + row * count;
        for (Py_ssize_t j = 0; j < count; j++)
            packed[j] = values[columns[j]];
    }
}

/* out (rows, units): row rows_of[j] = source row j for j < count (rows_of increasing), every
 * other row zero; one pass over out in order. */
static void scatter_rows_loop(Py_ssize_t rows, Py_ssize_t units, const float *restrict source,
                              Py_ssize_t count, const int64_t *restrict rows_of,
                              float *restrict out)
{
    size_t row_bytes = (size_t)units * sizeof(float);
    Py_ssize_t next = 0;
    for (Py_ssize_t row = 0; row < rows; row++) {
        if (next < count && rows_of[next] == row)
            memcpy(out + row * units, source + (next++) * units, row_bytes);
        else
            memset(out + row * units, 0, row_bytes);
    }
}

/* -- windows over channels-last images: im2col, col2im, max pooling and its gradient --------
 *
 * The geometry is dnn/backends/windows.py's: output (y, x) of a window of kh x kw cells moved
 * by strides (sh, sw) reads the input rows y*sh - top + i and columns x*sw - left + j for the
 * cells (i, j); an input outside the image is padding.  Every access is checked against the
 * image, so no geometry reaches outside the buffers.  The kernels take float32 or float64
 * (argmax int32) and work on whole images, so that the backend can split a batch across
 * threads; each loop runs with the GIL released.
 *
 * The two gradients add into each input in the generic kernels' order, onto 0: the generic
 * kernels make one pass per window cell (i, j), in increasing (i, j), over every window.  The
 * loops here go over the windows instead, one image at a time (its inputs stay in the cache),
 * in decreasing (y, x): the windows that read one input take it as cell
 * (i, j) = (r + top - y*sh, c + left - x*sw), so decreasing (y, x) is increasing (i, j), and
 * each input gets its terms in the same order, rounded alike.  (Windows apart, below, give each
 * input one term at most: there they go in increasing (y, x), in the order of memory.) */

typedef struct {
    Py_ssize_t n, h, w, c;  /* the images (n, h, w, c) */
    Py_ssize_t oh, ow;      /* the outputs' rows and columns */
    Py_ssize_t kh, kw;      /* the window's cells */
    Py_ssize_t sh, sw;      /* its strides */
    Py_ssize_t top, left;   /* the padding before the first row and column */
} Geometry;

/* The cells [*low, *high) of a window row that starts at input column `first` lie inside the
 * image (an empty range if none does). */
static void inside_columns(const Geometry *g, Py_ssize_t first, Py_ssize_t *low,
                           Py_ssize_t *high)
{
    *low = first < 0 ? -first : 0;
    *high = g->w - first < g->kw ? g->w - first : g->kw;
    if (*high < *low)
        *high = *low;
}

/* Windows apart (strides at least the window's size) read each input once at most: there the
 * gradients write each input read once, 0 + its term (the generic kernel's one addition onto
 * 0), and zero only the inputs that no window reads, instead of a pass over the image first. */
static int windows_apart(const Geometry *g)
{
    return g->sh >= g->kh && g->sw >= g->kw;
}

/* Whether a window reads input `position` along an axis of windows apart. */
static int read_apart(Py_ssize_t position, Py_ssize_t size, Py_ssize_t stride, Py_ssize_t pad,
                      Py_ssize_t out)
{
    Py_ssize_t padded = position + pad;
    return padded / stride < out && padded % stride < size;
}

/* Zero the inputs of an image (h, w, c) that no window reads, windows apart; columns_read[j]
 * says whether a window reads column j. */
static void zero_unread(const Geometry *g, char *image, size_t item, const char *columns_read)
{
    size_t pixel = (size_t)g->c * item, row_bytes = (size_t)g->w * pixel;
    for (Py_ssize_t row = 0; row < g->h; row++, image += row_bytes) {
        if (!read_apart(row, g->kh, g->sh, g->top, g->oh)) {
            memset(image, 0, row_bytes);
            continue;
        }
        for (Py_ssize_t column = 0; column < g->w; column++)
            if (!columns_read[column])
                memset(image + column * pixel, 0, pixel);
    }
}

/* cols (n, oh, ow, kh, kw, c) = the inputs each window covers, `fill` (kw * c elements of the
 * fill value, bytes of `item` each) where it reaches past the image.  A window row's kw * c
 * values are one run of the image row: copied whole, padding filled on either side. */
static void im2col_loop(const Geometry *g, size_t item, const char *restrict x,
                        char *restrict cols, const char *restrict fill)
{
    size_t pixel = (size_t)g->c * item, run = (size_t)g->kw * pixel;
    for (Py_ssize_t b = 0; b < g->n; b++) {
        const char *image = x + (size_t)b * g->h * g->w * pixel;
        for (Py_ssize_t y = 0; y < g->oh; y++) {
            for (Py_ssize_t xo = 0; xo < g->ow; xo++) {
                Py_ssize_t first = xo * g->sw - g->left, low, high;
                inside_columns(g, first, &low, &high);
                for (Py_ssize_t i = 0; i < g->kh; i++, cols += run) {
                    Py_ssize_t row = y * g->sh - g->top + i;
                    if (row < 0 || row >= g->h || high == low) {
                        memcpy(cols, fill, run);
                        continue;
                    }
                    if (low > 0)
                        memcpy(cols, fill, (size_t)low * pixel);
                    memcpy(cols + (size_t)low * pixel,
                           image + ((size_t)row * g->w + first + low) * pixel,
                           (size_t)(high - low) * pixel);
                    if (high < g->kw)
                        memcpy(cols + (size_t)high * pixel, fill, (size_t)(g->kw - high) * pixel);
                }
            }
        }
    }
}

/* The typed loops, for float (f32) and double (f64).
 *
 * col2im: grad_x (n, h, w, c) = each entry of grad_cols (n, oh, ow, kh, kw, c) added into the
 * input it was read from, onto 0, in the generic kernel's order (see above); a window row's
 * inputs are one run of the image row, as in im2col.
 *
 * max_pool: out (n, oh, ow, c) = the largest input of each window, argmax the first cell
 * holding it (a NaN over everything, the first NaN).  The value is NumPy's reduction of the
 * window's cells in order with numpy.maximum as x86 computes it, acc = isnan(acc) ? acc :
 * (acc > v ? acc : v): the last of several zeros that tie (their signs may differ), the first
 * NaN's bits.  Padding reads -inf: in cell 0 it starts the window with -inf; in a later cell
 * it changes nothing.  With `check`, returns how many (window, channel) values another order
 * of reduction could give other bits (a NaN, or a zero where zeros of both signs tie), else 0.
 *
 * max_pool_backward: grad_x (n, h, w, c) = where(argmax == cell, grad, 0) added into the
 * input each window cell reads, onto 0, in the generic kernel's order (see above; an argmax
 * outside the window adds only zeros). */
#define WINDOW_LOOPS(T, SFX)                                                                  \
VECTOR_CLONES                                                                                 \
static void col2im_loop_##SFX(const Geometry *g, const char *columns_read,                    \
                              const T *restrict cols, T *restrict grad_x)                     \
{                                                                                             \
    Py_ssize_t c = g->c, window = g->kh * g->kw * c;                                          \
    int apart = windows_apart(g);                                                             \
    for (Py_ssize_t b = 0; b < g->n; b++) {                                                   \
        T *restrict image = grad_x + b * g->h * g->w * c;                                     \
        const T *image_cols = cols + b * g->oh * g->ow * window;                              \
        if (apart)                                                                            \
            zero_unread(g, (char *)image, sizeof(T), columns_read);                           \
        else                                                                                  \
            for (Py_ssize_t e = 0; e < g->h * g->w * c; e++)                                  \
                image[e] = 0;                                                                 \
        for (Py_ssize_t yy = 0; yy < g->oh; yy++) {                                           \
            Py_ssize_t y = apart ? yy : g->oh - 1 - yy;                                       \
            for (Py_ssize_t xx = 0; xx < g->ow; xx++) {                                       \
                Py_ssize_t xo = apart ? xx : g->ow - 1 - xx;                                  \
                Py_ssize_t first = xo * g->sw - g->left, low, high;                           \
                inside_columns(g, first, &low, &high);                                        \
                Py_ssize_t length = (high - low) * c;                                         \
                for (Py_ssize_t i = 0; i < g->kh; i++) {                                      \
                    Py_ssize_t row = y * g->sh - g->top + i;                                  \
                    if (row < 0 || row >= g->h)                                               \
                        continue;                                                             \
                    T *restrict target = image + (row * g->w + first + low) * c;              \
                    const T *restrict source = image_cols + (y * g->ow + xo) * window         \
                                               + (i * g->kw + low) * c;                       \
                    for (Py_ssize_t e = 0; e < length; e++)                                   \
                        target[e] = (apart ? (T)0 : target[e]) + source[e];                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* The (window, channel) values of one output whose bits depend on the order of reduction. */ \
static Py_ssize_t ambiguous_##SFX(const Geometry *g, const T *image, Py_ssize_t y,            \
                                  Py_ssize_t xo, const T *out)                                \
{                                                                                             \
    Py_ssize_t count = 0, c = g->c;                                                           \
    for (Py_ssize_t ch = 0; ch < c; ch++) {                                                   \
        T best = out[ch];                                                                     \
        if (best != best) {                                                                   \
            count++;                                                                          \
            continue;                                                                         \
        }                                                                                     \
        if (best != 0)                                                                        \
            continue;                                                                         \
        int mixed = 0;                                                                        \
        for (Py_ssize_t i = 0; i < g->kh && !mixed; i++) {                                    \
            Py_ssize_t row = y * g->sh - g->top + i;                                          \
            for (Py_ssize_t j = 0; j < g->kw && row >= 0 && row < g->h; j++) {                \
                Py_ssize_t column = xo * g->sw - g->left + j;                                 \
                if (column < 0 || column >= g->w)                                             \
                    continue;                                                                 \
                T v = image[(row * g->w + column) * c + ch];                                  \
                if (v == 0 && signbit(v) != signbit(best))                                    \
                    mixed = 1;                                                                \
            }                                                                                 \
        }                                                                                     \
        count += mixed;                                                                       \
    }                                                                                         \
    return count;                                                                             \
}                                                                                             \
                                                                                              \
VECTOR_CLONES                                                                                 \
static Py_ssize_t max_pool_loop_##SFX(const Geometry *g, const T *restrict x,                 \
                                      T *restrict out, int32_t *restrict argmax, int check)   \
{                                                                                             \
    Py_ssize_t c = g->c, ambiguous = 0;                                                       \
    for (Py_ssize_t b = 0; b < g->n; b++) {                                                   \
        const T *image = x + b * g->h * g->w * c;                                             \
        for (Py_ssize_t y = 0; y < g->oh; y++) {                                              \
            for (Py_ssize_t xo = 0; xo < g->ow; xo++, out += c, argmax += c) {                \
                Py_ssize_t top = y * g->sh - g->top, left = xo * g->sw - g->left;             \
                if (top >= 0 && top < g->h && left >= 0 && left < g->w) {                     \
                    const T *restrict first = image + (top * g->w + left) * c;                \
                    for (Py_ssize_t ch = 0; ch < c; ch++)                                     \
                        out[ch] = first[ch];                                                  \
                } else {                                                                      \
                    for (Py_ssize_t ch = 0; ch < c; ch++)                                     \
                        out[ch] = -(T)INFINITY;                                               \
                }                                                                             \
                for (Py_ssize_t ch = 0; ch < c; ch++)                                         \
                    argmax[ch] = 0;                                                           \
                for (Py_ssize_t i = 0; i < g->kh; i++) {                                      \
                    Py_ssize_t row = top + i;                                                 \
                    if (row < 0 || row >= g->h)                                               \
                        continue;                                                             \
                    for (Py_ssize_t j = i == 0 ? 1 : 0; j < g->kw; j++) {                     \
                        Py_ssize_t column = left + j;                                         \
                        if (column < 0 || column >= g->w)                                     \
                            continue;                                                         \
                        const T *restrict cell = image + (row * g->w + column) * c;           \
                        int32_t index = (int32_t)(i * g->kw + j);                             \
                        for (Py_ssize_t ch = 0; ch < c; ch++) {                               \
                            T acc = out[ch], v = cell[ch];                                    \
                            int open = acc == acc;                                            \
                            argmax[ch] = open && (v > acc || v != v) ? index : argmax[ch];    \
                            out[ch] = !open || acc > v ? acc : v;                             \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
                if (check)                                                                    \
                    ambiguous += ambiguous_##SFX(g, image, y, xo, out);                       \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    return ambiguous;                                                                         \
}                                                                                             \
                                                                                              \
VECTOR_CLONES                                                                                 \
static void max_pool_backward_loop_##SFX(const Geometry *g, const char *columns_read,         \
                                         const T *restrict grad,                              \
                                         const int32_t *restrict argmax,                      \
                                         T *restrict grad_x)                                  \
{                                                                                             \
    Py_ssize_t c = g->c, pixels = g->oh * g->ow;                                              \
    int apart = windows_apart(g);                                                             \
    for (Py_ssize_t b = 0; b < g->n; b++) {                                                   \
        T *restrict image = grad_x + b * g->h * g->w * c;                                     \
        if (apart)                                                                            \
            zero_unread(g, (char *)image, sizeof(T), columns_read);                           \
        else                                                                                  \
            for (Py_ssize_t e = 0; e < g->h * g->w * c; e++)                                  \
                image[e] = 0;                                                                 \
        for (Py_ssize_t yy = 0; yy < g->oh; yy++) {                                           \
            Py_ssize_t y = apart ? yy : g->oh - 1 - yy;                                       \
            for (Py_ssize_t xx = 0; xx < g->ow; xx++) {                                       \
                Py_ssize_t xo = apart ? xx : g->ow - 1 - xx;                                  \
                const T *restrict value = grad + (b * pixels + y * g->ow + xo) * c;           \
                const int32_t *restrict chosen = argmax + (b * pixels + y * g->ow + xo) * c;  \
                Py_ssize_t first = xo * g->sw - g->left, low, high;                           \
                inside_columns(g, first, &low, &high);                                        \
                for (Py_ssize_t i = 0; i < g->kh; i++) {                                      \
                    Py_ssize_t row = y * g->sh - g->top + i;                                  \
                    if (row < 0 || row >= g->h)                                               \
                        continue;                                                             \
                    for (Py_ssize_t j = low; j < high; j++) {                                 \
                        T *restrict target = image + (row * g->w + first + j) * c;            \
                        int32_t cell = (int32_t)(i * g->kw + j);                              \
                        for (Py_ssize_t ch = 0; ch < c; ch++)                                 \
                            target[ch] = (apart ? (T)0 : target[ch])                          \
                                         + (chosen[ch] == cell ? value[ch] : (T)0);           \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

WINDOW_LOOPS(float, f32)
WINDOW_LOOPS(double, f64)

/* -- the Python glue: parse, check the buffers, release the GIL, run the loop ------------- */

PyDoc_STRVAR(sgd_doc,
"sgd(param, grad, velocity, learning_rate, momentum, nesterov)\n\n"
"Keras SGD in place: v = v*m - lr*g; param += v (param += m*v - lr*g with nesterov);\n"
"velocity None: param -= lr*g.");

static PyObject *sgd(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[3];
    float lr, momentum;
    int nesterov;
    if (!PyArg_ParseTuple(args, "OOOffp", &objects[0], &objects[1], &objects[2], &lr, &momentum,
                          &nesterov))
        return NULL;
    static const char *const names[] = {"param", "grad", "velocity"};
    Py_buffer views[3];
    if (get_all(objects, views, names, "wro") < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    sgd_loop(views[0].len / 4, views[0].buf, views[1].buf, views[2].buf, lr, momentum,
             nesterov);
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(rmsprop_doc,
"rmsprop(param, grad, mean_square, mean_grad, momentum_buffer, learning_rate, rho,\n"
"        one_minus_rho, momentum, epsilon)\n\n"
"Keras RMSprop in place: ms = ms*rho + (1-rho)*g*g; step = lr*g / sqrt(ms + eps), with\n"
"ms - mg*mg inside the root when mean_grad is given (mg = mg*rho + (1-rho)*g) and\n"
"buf = buf*momentum + step when momentum_buffer is given; param -= step (or buf).");

static PyObject *rmsprop(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[5];
    float lr, rho, one_minus_rho, momentum, eps;
    if (!PyArg_ParseTuple(args, "OOOOOfffff", &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &lr, &rho, &one_minus_rho, &momentum, &eps))
        return NULL;
    static const char *const names[] = {"param", "grad", "mean_square", "mean_grad",
                                        "momentum_buffer"};
    Py_buffer views[5];
    if (get_all(objects, views, names, "wrwoo") < 0)
        return NULL;
    Py_ssize_t n = views[0].len / 4;
    Py_BEGIN_ALLOW_THREADS
    if (views[3].buf == NULL && views[4].buf == NULL)
        rmsprop_plain_loop(n, views[0].buf, views[1].buf, views[2].buf, lr, rho, one_minus_rho,
                           eps);
    else
        rmsprop_variant_loop(n, views[0].buf, views[1].buf, views[2].buf, views[3].buf,
                             views[4].buf, lr, rho, one_minus_rho, momentum, eps);
    Py_END_ALLOW_THREADS
    release_all(views, 5);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(adam_doc,
"adam(param, grad, m, v, alpha, one_minus_beta_1, one_minus_beta_2, epsilon)\n\n"
"Keras Adam in place: m += (g - m)*(1-b1); v += (g*g - v)*(1-b2);\n"
"param -= alpha*m / (sqrt(v) + eps).");

static PyObject *adam(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[4];
    float alpha, one_minus_beta_1, one_minus_beta_2, eps;
    if (!PyArg_ParseTuple(args, "OOOOffff", &objects[0], &objects[1], &objects[2], &objects[3],
                          &alpha, &one_minus_beta_1, &one_minus_beta_2, &eps))
        return NULL;
    static const char *const names[] = {"param", "grad", "m", "v"};
    Py_buffer views[4];
    if (get_all(objects, views, names, "wrww") < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    adam_loop(views[0].len / 4, views[0].buf, views[1].buf, views[2].buf, views[3].buf, alpha,
              one_minus_beta_1, one_minus_beta_2, eps);
    Py_END_ALLOW_THREADS
    release_all(views, 4);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(bias_relu_doc,
"bias_relu(z, bias)\n\n"
"z = maximum(z + bias, 0) in place, for z (n, o) and bias (o,); NaN stays NaN as in\n"
"numpy.maximum.");

static PyObject *bias_relu(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    Py_buffer views[2];
    if (get_floats(objects[0], &views[0], "z", 1, 0, -1) < 0)
        return NULL;
    if (get_floats(objects[1], &views[1], "bias", 0, 0, -1) < 0) {
        release_all(views, 1);
        return NULL;
    }
    Py_ssize_t size = views[0].len / 4, units = views[1].len / 4;
    if (units == 0 || size % units != 0) {
        PyErr_Format(PyExc_ValueError, "bias has %zd elements, which does not divide z's %zd",
                     units, size);
        release_all(views, 2);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    bias_relu_loop(size / units, units, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(relu_backward_doc,
"relu_backward(grad, out)\n\n"
"grad = where(out > 0, grad, 0) in place: the gradient through relu given its output.");

static PyObject *relu_backward(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    static const char *const names[] = {"grad", "out"};
    Py_buffer views[2];
    if (get_all(objects, views, names, "wr") < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    relu_backward_loop(views[0].len / 4, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

/* The rows and columns of a 2-D view, or -1 with a ValueError naming `what`. */
static int get_matrix_shape(const Py_buffer *view, const char *what, Py_ssize_t *rows,
                            Py_ssize_t *columns)
{
    if (view->ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s must be 2-D (rows, columns), not %d-D", what,
                     view->ndim);
        return -1;
    }
    *rows = view->shape[0];
    *columns = view->shape[1];
    return 0;
}

/* get_all() for arrays of one shape whose first one must be 2-D: its rows and columns. */
static int get_all_rows(PyObject **objects, Py_buffer *views, const char *const *names,
                        const char *spec, Py_ssize_t *rows, Py_ssize_t *columns)
{
    if (get_all(objects, views, names, spec) < 0)
        return -1;
    if (get_matrix_shape(&views[0], names[0], rows, columns) < 0) {
        release_all(views, (int)strlen(spec));
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(column_sum_doc,
"column_sum(matrix, out)\n\n"
"out = numpy.sum(matrix, axis=0) for matrix (n, o) and out (o,), added in NumPy's order.");

static PyObject *column_sum(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    Py_buffer views[2];
    Py_ssize_t rows, units;
    if (get_floats(objects[0], &views[0], "matrix", 0, 0, -1) < 0)
        return NULL;
    if (get_matrix_shape(&views[0], "matrix", &rows, &units) < 0
            || get_floats(objects[1], &views[1], "out", 1, 0, units) < 0) {
        release_all(views, 1);
        return NULL;
    }
    if (overlap(&views[0], &views[1])) {
        PyErr_SetString(PyExc_ValueError, "matrix and out must not overlap");
        release_all(views, 2);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    column_sum_loop(rows, units, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(subtract_row_max_doc,
"subtract_row_max(logits, shifted)\n\n"
"shifted = logits - max(logits, axis=1, keepdims=True) for (n, k) arrays (NaN skipped).");

static PyObject *subtract_row_max(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    static const char *const names[] = {"logits", "shifted"};
    Py_buffer views[2];
    Py_ssize_t rows, classes;
    if (get_all_rows(objects, views, names, "rw", &rows, &classes) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    subtract_row_max_loop(rows, classes, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(softmax_crossentropy_grad_doc,
"softmax_crossentropy_grad(grad, exp, targets, shifted, total) -> float\n\n"
"For (n, k) arrays, exp = exp(shifted) and one-hot targets: total (n,) = exp.sum(axis=1),\n"
"grad = (exp / total - targets) / n; returns numpy.sum(targets * shifted) (a float32 value).");

static PyObject *softmax_crossentropy_grad(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[5];
    if (!PyArg_ParseTuple(args, "OOOOO", &objects[0], &objects[1], &objects[2], &objects[3],
                          &objects[4]))
        return NULL;
    static const char *const names[] = {"grad", "exp", "targets", "shifted"};
    Py_buffer views[5];
    Py_ssize_t rows, classes;
    if (get_all_rows(objects, views, names, "wrrr", &rows, &classes) < 0)
        return NULL;
    if (get_floats(objects[4], &views[4], "total", 1, 0, rows) < 0) {
        release_all(views, 4);
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (overlap(&views[i], &views[4])) {
            PyErr_Format(PyExc_ValueError, "%s and total must not overlap", names[i]);
            release_all(views, 5);
            return NULL;
        }
    }
    float target_logit_sum;
    Py_BEGIN_ALLOW_THREADS
    target_logit_sum = softmax_crossentropy_grad_loop(rows, classes, views[1].buf, views[2].buf,
                                                      views[3].buf, views[4].buf, views[0].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 5);
    return PyFloat_FromDouble(target_logit_sum);
}

PyDoc_STRVAR(count_correct_doc,
"count_correct(output, targets) -> int\n\n"
"The number of rows of (n, k) output and one-hot targets whose argmax agree.");

static PyObject *count_correct(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    static const char *const names[] = {"output", "targets"};
    Py_buffer views[2];
    Py_ssize_t rows, classes, correct;
    if (get_all_rows(objects, views, names, "rr", &rows, &classes) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    correct = count_correct_loop(rows, classes, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return PyLong_FromSsize_t(correct);
}

/* The int64 buffer of `object`, one-dimensional, or -1 with a Python exception naming `what`. */
static int get_indices(PyObject *object, Py_buffer *view, const char *what, int writable)
{
    view->obj = NULL;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s int64 array", what,
                     writable ? ", writable" : "");
        return -1;
    }
    if (view->itemsize != 8 || (strcmp(view->format, "l") != 0
                                && strcmp(view->format, "q") != 0) || view->ndim != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D int64 array", what);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* 0 when indices[0..count) increase strictly and lie in [0, limit), else -1 with a ValueError
 * naming `what`. */
static int check_increasing(const int64_t *indices, Py_ssize_t count, Py_ssize_t limit,
                            const char *what)
{
    for (Py_ssize_t j = 0; j < count; j++) {
        if (indices[j] < 0 || indices[j] >= limit || (j > 0 && indices[j] <= indices[j - 1])) {
            PyErr_Format(PyExc_ValueError,
                         "%s must be increasing indices below %zd (entry %zd is %lld)", what,
                         limit, j, (long long)indices[j]);
            return -1;
        }
    }
    return 0;
}

/* views[0] = the float32 matrix objects[0] (rows, cols), named `matrix`, and views[1] = the
 * int64 indices objects[1], named `indices`; or -1 with a Python exception, nothing held. */
static int get_matrix_and_indices(PyObject **objects, Py_buffer *views, const char *matrix,
                                  const char *indices, int writable_indices, Py_ssize_t *rows,
                                  Py_ssize_t *cols)
{
    if (get_floats(objects[0], &views[0], matrix, 0, 0, -1) < 0)
        return -1;
    if (get_matrix_shape(&views[0], matrix, rows, cols) < 0
            || get_indices(objects[1], &views[1], indices, writable_indices) < 0) {
        release_all(views, 1);
        return -1;
    }
    return 0;
}

/* views[2] = the writable float32 matrix `out` (rows, cols), apart from views[0] and views[1]
 * (named in `names`); or -1 with a Python exception and views[0..1] released too. */
static int get_out_matrix(PyObject *out, Py_buffer *views, const char *const *names,
                          Py_ssize_t *rows, Py_ssize_t *cols)
{
    if (get_floats(out, &views[2], "out", 1, 0, -1) < 0) {
        release_all(views, 2);
        return -1;
    }
    if (get_matrix_shape(&views[2], "out", rows, cols) < 0) {
        release_all(views, 3);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        if (overlap(&views[i], &views[2])) {
            PyErr_Format(PyExc_ValueError, "%s and out must not overlap", names[i]);
            release_all(views, 3);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(nonzero_columns_doc,
"nonzero_columns(x, columns) -> int\n\n"
"For x (n, i): writes to columns (i,) int64 the indices of the columns of x that hold a value\n"
"other than zero (NaN included), in increasing order, and returns how many there are.");

static PyObject *nonzero_columns(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    if (!PyArg_ParseTuple(args, "OO", &objects[0], &objects[1]))
        return NULL;
    Py_buffer views[2];
    Py_ssize_t rows, cols;
    if (get_matrix_and_indices(objects, views, "x", "columns", 1, &rows, &cols) < 0)
        return NULL;
    if (views[1].len / 8 != cols) {
        PyErr_Format(PyExc_ValueError, "columns has %zd elements, expected %zd",
                     views[1].len / 8, cols);
        release_all(views, 2);
        return NULL;
    }
    uint32_t *seen = malloc(cols > 0 ? (size_t)cols * sizeof(uint32_t) : 1);
    if (seen == NULL) {
        release_all(views, 2);
        return PyErr_NoMemory();
    }
    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = nonzero_columns_loop(rows, cols, views[0].buf, seen, views[1].buf);
    Py_END_ALLOW_THREADS
    free(seen);
    release_all(views, 2);
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(take_columns_doc,
"take_columns(x, columns, out)\n\n"
"out (n, k) = x (n, i)[:, columns] for k increasing int64 column indices.");

static PyObject *take_columns(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[3];
    if (!PyArg_ParseTuple(args, "OOO", &objects[0], &objects[1], &objects[2]))
        return NULL;
    Py_buffer views[3];
    Py_ssize_t rows, cols, out_rows, out_cols;
    static const char *const names[] = {"x", "columns"};
    if (get_matrix_and_indices(objects, views, names[0], names[1], 0, &rows, &cols) < 0
            || get_out_matrix(objects[2], views, names, &out_rows, &out_cols) < 0)
        return NULL;
    Py_ssize_t count = views[1].len / 8;
    if (check_increasing(views[1].buf, count, cols, "columns") < 0) {
        release_all(views, 3);
        return NULL;
    }
    if (out_rows != rows || out_cols != count) {
        PyErr_Format(PyExc_ValueError, "out has shape (%zd, %zd), expected (%zd, %zd)",
                     out_rows, out_cols, rows, count);
        release_all(views, 3);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    take_columns_loop(rows, cols, views[0].buf, count, views[1].buf, views[2].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(scatter_rows_doc,
"scatter_rows(source, rows, out)\n\n"
"For source (k, o), k increasing int64 row indices and out (i, o): out[rows] = source and\n"
"every other row of out = 0.");

/* views[0..2] = the arguments (source, rows, out) of scatter_rows and add_rows: source (count,
 * units) float32, count int64 row indices, out (rows, units) float32 apart from both; or -1
 * with a Python exception, nothing held.  The indices are not checked. */
static int get_rows_arguments(PyObject *args, Py_buffer *views, Py_ssize_t *count,
                              Py_ssize_t *units, Py_ssize_t *rows)
{
    PyObject *objects[3];
    if (!PyArg_ParseTuple(args, "OOO", &objects[0], &objects[1], &objects[2]))
        return -1;
    Py_ssize_t out_units;
    static const char *const names[] = {"source", "rows"};
    if (get_matrix_and_indices(objects, views, names[0], names[1], 0, count, units) < 0
            || get_out_matrix(objects[2], views, names, rows, &out_units) < 0)
        return -1;
    if (views[1].len / 8 != *count || out_units != *units) {
        PyErr_Format(PyExc_ValueError,
                     "source (%zd, %zd) needs %zd row indices and out of %zd columns, "
                     "not %zd and %zd", *count, *units, *count, *units, views[1].len / 8,
                     out_units);
        release_all(views, 3);
        return -1;
    }
    return 0;
}

static PyObject *scatter_rows(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer views[3];
    Py_ssize_t count, units, rows;
    if (get_rows_arguments(args, views, &count, &units, &rows) < 0)
        return NULL;
    if (check_increasing(views[1].buf, count, rows, "rows") < 0) {
        release_all(views, 3);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    scatter_rows_loop(rows, units, views[0].buf, count, views[1].buf, views[2].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

/* out (rows, units): row rows_of[j] += source row j, for j = 0, 1, ... in turn (numpy.add.at's
 * order: a row named twice adds both, first the first; a negative index counts from the end,
 * as NumPy's). */
static void add_rows_loop(Py_ssize_t rows, Py_ssize_t units, const float *restrict source,
                          Py_ssize_t count, const int64_t *restrict rows_of, float *restrict out)
{
    for (Py_ssize_t j = 0; j < count; j++) {
        float *restrict row = out + (rows_of[j] < 0 ? rows_of[j] + rows : rows_of[j]) * units;
        const float *restrict values = source + j * units;
        for (Py_ssize_t k = 0; k < units; k++)
            row[k] += values[k];
    }
}

PyDoc_STRVAR(add_rows_doc,
"add_rows(source, rows, out)\n\n"
"For source (k, o), k int64 row indices from -i to i - 1 and out (i, o): out[rows[j]] +=\n"
"source[j] for each j in order, as numpy.add.at(out, rows, source).");

static PyObject *add_rows(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer views[3];
    Py_ssize_t count, units, rows;
    if (get_rows_arguments(args, views, &count, &units, &rows) < 0)
        return NULL;
    const int64_t *rows_of = views[1].buf;
    for (Py_ssize_t j = 0; j < count; j++) {
        if (rows_of[j] < -rows || rows_of[j] >= rows) {
            PyErr_Format(PyExc_ValueError,
                         "rows must be indices from %zd to %zd (entry %zd is %lld)", -rows,
                         rows - 1, j, (long long)rows_of[j]);
            release_all(views, 3);
            return NULL;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    add_rows_loop(rows, units, views[0].buf, count, rows_of, views[2].buf);
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

/* -- the window kernels' glue ---------------------------------------------------------------- */

/* The C-contiguous buffer of `object`, `ndim`-dimensional, of one of the element kinds in
 * `kinds` ('f' float32, 'd' float64, 'i' int32); returns its kind, or 0 with a Python
 * exception naming `what` (nothing held). */
static char get_window_array(PyObject *object, Py_buffer *view, const char *what, int writable,
                             int ndim, const char *kinds)
{
    view->obj = NULL;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s array", what,
                     writable ? ", writable" : "");
        return 0;
    }
    const char *format = view->format;
    char kind = 0;
    if (view->itemsize == 4 && strcmp(format, "f") == 0)
        kind = 'f';
    else if (view->itemsize == 8 && strcmp(format, "d") == 0)
        kind = 'd';
    else if (view->itemsize == 4 && (strcmp(format, "i") == 0 || strcmp(format, "l") == 0))
        kind = 'i';
    if (kind == 0 || strchr(kinds, kind) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s must be %s array, not format '%s'", what,
                     strcmp(kinds, "i") == 0 ? "an int32" : "a float32 or float64", format);
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D, not %d-D", what, ndim, view->ndim);
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    return kind;
}

/* Fill `views` from `objects` as `names`, `writable`, `ndims` and `kinds` say; the float
 * arrays must all be of one kind, which it returns (0 with a Python exception, nothing held),
 * and no writable array may share memory with another array. */
static char get_window_arrays(PyObject **objects, Py_buffer *views, int count,
                              const char *const *names, const int *writable, const int *ndims,
                              const char *const *kinds)
{
    char floats = 0;
    for (int a = 0; a < count; a++) {
        char kind = get_window_array(objects[a], &views[a], names[a], writable[a], ndims[a],
                                     kinds[a]);
        if (kind == 0) {
            release_all(views, a);
            return 0;
        }
        if (kind != 'i') {
            if (floats != 0 && kind != floats) {
                PyErr_Format(PyExc_TypeError, "%s must have the dtype of the other arrays",
                             names[a]);
                release_all(views, a + 1);
                return 0;
            }
            floats = kind;
        }
        for (int b = 0; b < a; b++) {
            if ((writable[a] || writable[b]) && overlap(&views[a], &views[b])) {
                PyErr_Format(PyExc_ValueError, "%s and %s must not overlap", names[b], names[a]);
                release_all(views, a + 1);
                return 0;
            }
        }
    }
    return floats;
}

/* Check the strides and padding and the window's cells; -1 with a ValueError if wrong. */
static int check_window(const Geometry *g)
{
    if (g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 || g->top < 0 || g->left < 0) {
        PyErr_Format(PyExc_ValueError, "a window needs cells and strides of at least 1 and "
                     "padding of at least 0, not cells %zdx%zd, strides %zdx%zd, padding "
                     "%zd, %zd", g->kh, g->kw, g->sh, g->sw, g->top, g->left);
        return -1;
    }
    if (g->kh > INT32_MAX / g->kw) {
        PyErr_SetString(PyExc_ValueError, "a window's cells must be numbered in int32");
        return -1;
    }
    return 0;
}

/* For windows apart, whether a window reads each of the w columns (a new array the caller
 * frees); otherwise an unused byte.  NULL with a MemoryError if out of memory. */
static char *columns_read_apart(const Geometry *g)
{
    char *read = malloc(g->w > 0 ? (size_t)g->w : 1);
    if (read == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (windows_apart(g))
        for (Py_ssize_t column = 0; column < g->w; column++)
            read[column] = (char)read_apart(column, g->kw, g->sw, g->left, g->ow);
    return read;
}

/* A ValueError saying that `what` has the wrong shape, and the views released; returns NULL. */
static PyObject *shape_error(const char *what, Py_buffer *views, int count)
{
    PyErr_Format(PyExc_ValueError, "%s does not have the shape the images and the window "
                 "give it", what);
    release_all(views, count);
    return NULL;
}

/* g's images from images (n, h, w, c) and its window grid from windows (n, oh, ow, ...,
 * c), which must have the images' n and c, as must argmax (NULL: none), windows' very shape;
 * then the window checked (check_window, g's cells and strides set).  0, or -1 with a
 * ValueError and the views released. */
static int window_geometry(Geometry *g, const Py_ssize_t *images, const Py_buffer *windows,
                           const char *windows_name, const Py_buffer *argmax,
                           Py_buffer *views, int count)
{
    g->n = images[0], g->h = images[1], g->w = images[2], g->c = images[3];
    g->oh = windows->shape[1], g->ow = windows->shape[2];
    if (windows->shape[0] != g->n || windows->shape[windows->ndim - 1] != g->c) {
        shape_error(windows_name, views, count);
        return -1;
    }
    if (argmax != NULL)
        for (int d = 0; d < windows->ndim; d++)
            if (argmax->shape[d] != windows->shape[d]) {
                shape_error("argmax", views, count);
                return -1;
            }
    if (check_window(g) < 0) {
        release_all(views, count);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(im2col_doc,
"im2col(x, cols, sh, sw, top, left, fill)\n\n"
"cols (n, oh, ow, kh, kw, c) = the inputs of x (n, h, w, c) each window covers, windows moved\n"
"by strides (sh, sw) over x padded with top rows and left columns before; fill where a window\n"
"reaches past the image.  float32 or float64.");

static PyObject *im2col(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    Geometry g;
    double fill;
    if (!PyArg_ParseTuple(args, "OOnnnnd", &objects[0], &objects[1], &g.sh, &g.sw, &g.top,
                          &g.left, &fill))
        return NULL;
    static const char *const names[] = {"x", "cols"}, *const kinds[] = {"fd", "fd"};
    static const int writable[] = {0, 1}, ndims[] = {4, 6};
    Py_buffer views[2];
    char kind = get_window_arrays(objects, views, 2, names, writable, ndims, kinds);
    if (kind == 0)
        return NULL;
    g.kh = views[1].shape[3], g.kw = views[1].shape[4];
    if (window_geometry(&g, views[0].shape, &views[1], "cols", NULL, views, 2) < 0)
        return NULL;
    size_t item = kind == 'f' ? sizeof(float) : sizeof(double);
    Py_ssize_t run = g.kw * g.c;
    char *pattern = malloc(run > 0 ? (size_t)run * item : 1);
    if (pattern == NULL) {
        release_all(views, 2);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t e = 0; e < run; e++) {
        if (kind == 'f')
            ((float *)pattern)[e] = (float)fill;
        else
            ((double *)pattern)[e] = fill;
    }
    Py_BEGIN_ALLOW_THREADS
    im2col_loop(&g, item, views[0].buf, views[1].buf, pattern);
    Py_END_ALLOW_THREADS
    free(pattern);
    release_all(views, 2);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(col2im_doc,
"col2im(grad_cols, grad_x, sh, sw, top, left)\n\n"
"The gradient of im2col: grad_x (n, h, w, c) = each entry of grad_cols (n, oh, ow, kh, kw, c)\n"
"added into the input it was read from, in increasing window offset (row, then column),\n"
"onto zeros.  float32 or float64.");

static PyObject *col2im(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[2];
    Geometry g;
    if (!PyArg_ParseTuple(args, "OOnnnn", &objects[0], &objects[1], &g.sh, &g.sw, &g.top,
                          &g.left))
        return NULL;
    static const char *const names[] = {"grad_cols", "grad_x"}, *const kinds[] = {"fd", "fd"};
    static const int writable[] = {0, 1}, ndims[] = {6, 4};
    Py_buffer views[2];
    char kind = get_window_arrays(objects, views, 2, names, writable, ndims, kinds);
    if (kind == 0)
        return NULL;
    g.kh = views[0].shape[3], g.kw = views[0].shape[4];
    if (window_geometry(&g, views[1].shape, &views[0], "grad_cols", NULL, views, 2) < 0)
        return NULL;
    char *columns_read = columns_read_apart(&g);
    if (columns_read == NULL) {
        release_all(views, 2);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        col2im_loop_f32(&g, columns_read, views[0].buf, views[1].buf);
    else
        col2im_loop_f64(&g, columns_read, views[0].buf, views[1].buf);
    Py_END_ALLOW_THREADS
    free(columns_read);
    release_all(views, 2);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(max_pool_doc,
"max_pool(x, out, argmax, kh, kw, sh, sw, top, left, check) -> int\n\n"
"Max pooling of x (n, h, w, c) by kh x kw windows: out (n, oh, ow, c) the largest input of\n"
"each window (padding never wins: it reads -inf), argmax (int32) the first cell i * kw + j\n"
"holding it, a NaN over everything (the first); out's bits are numpy.max's over the window's\n"
"cells as it reduces them on x86.  Returns 0, or with check true the number of window\n"
"channels whose bits another order of reduction could change (a NaN; zeros of both signs\n"
"tying for the largest).  float32 or float64.");

static PyObject *max_pool(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[3];
    Geometry g;
    int check;
    if (!PyArg_ParseTuple(args, "OOOnnnnnnp", &objects[0], &objects[1], &objects[2], &g.kh,
                          &g.kw, &g.sh, &g.sw, &g.top, &g.left, &check))
        return NULL;
    static const char *const names[] = {"x", "out", "argmax"},
                             *const kinds[] = {"fd", "fd", "i"};
    static const int writable[] = {0, 1, 1}, ndims[] = {4, 4, 4};
    Py_buffer views[3];
    char kind = get_window_arrays(objects, views, 3, names, writable, ndims, kinds);
    if (kind == 0)
        return NULL;
    if (window_geometry(&g, views[0].shape, &views[1], "out", &views[2], views, 3) < 0)
        return NULL;
    Py_ssize_t ambiguous;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        ambiguous = max_pool_loop_f32(&g, views[0].buf, views[1].buf, views[2].buf, check);
    else
        ambiguous = max_pool_loop_f64(&g, views[0].buf, views[1].buf, views[2].buf, check);
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    return PyLong_FromSsize_t(ambiguous);
}

PyDoc_STRVAR(max_pool_backward_doc,
"max_pool_backward(grad, argmax, grad_x, kh, kw, sh, sw, top, left)\n\n"
"The gradient of max_pool: each of grad (n, oh, ow, c) added into the input of grad_x\n"
"(n, h, w, c) that its window's argmax cell read (none for padding or a cell outside the\n"
"window), zeros elsewhere, in increasing window offset as col2im adds.  float32 or float64.");

static PyObject *max_pool_backward(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects[3];
    Geometry g;
    if (!PyArg_ParseTuple(args, "OOOnnnnnn", &objects[0], &objects[1], &objects[2], &g.kh,
                          &g.kw, &g.sh, &g.sw, &g.top, &g.left))
        return NULL;
    static const char *const names[] = {"grad", "argmax", "grad_x"},
                             *const kinds[] = {"fd", "i", "fd"};
    static const int writable[] = {0, 0, 1}, ndims[] = {4, 4, 4};
    Py_buffer views[3];
    char kind = get_window_arrays(objects, views, 3, names, writable, ndims, kinds);
    if (kind == 0)
        return NULL;
    if (window_geometry(&g, views[2].shape, &views[0], "grad", &views[1], views, 3) < 0)
        return NULL;
    char *columns_read = columns_read_apart(&g);
    if (columns_read == NULL) {
        release_all(views, 3);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        max_pool_backward_loop_f32(&g, columns_read, views[0].buf, views[1].buf, views[2].buf);
    else
        max_pool_backward_loop_f64(&g, columns_read, views[0].buf, views[1].buf, views[2].buf);
    Py_END_ALLOW_THREADS
    free(columns_read);
    release_all(views, 3);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"sgd", sgd, METH_VARARGS, sgd_doc},
    {"rmsprop", rmsprop, METH_VARARGS, rmsprop_doc},
    {"adam", adam, METH_VARARGS, adam_doc},
    {"bias_relu", bias_relu, METH_VARARGS, bias_relu_doc},
    {"relu_backward", relu_backward, METH_VARARGS, relu_backward_doc},
    {"column_sum", column_sum, METH_VARARGS, column_sum_doc},
    {"subtract_row_max", subtract_row_max, METH_VARARGS, subtract_row_max_doc},
    {"softmax_crossentropy_grad", softmax_crossentropy_grad, METH_VARARGS,
     softmax_crossentropy_grad_doc},
    {"count_correct", count_correct, METH_VARARGS, count_correct_doc},
    {"nonzero_columns", nonzero_columns, METH_VARARGS, nonzero_columns_doc},
    {"take_columns", take_columns, METH_VARARGS, take_columns_doc},
    {"scatter_rows", scatter_rows, METH_VARARGS, scatter_rows_doc},
    {"add_rows", add_rows, METH_VARARGS, add_rows_doc},
    {"im2col", im2col, METH_VARARGS, im2col_doc},
    {"col2im", col2im, METH_VARARGS, col2im_doc},
    {"max_pool", max_pool, METH_VARARGS, max_pool_doc},
    {"max_pool_backward", max_pool_backward, METH_VARARGS, max_pool_backward_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnn.backends._cpu_kernels",
    "Fused float32 kernels of the cpu backend (see the comment at the top of the C source).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cpu_kernels(void)
{
    return PyModule_Create(&module);
}
