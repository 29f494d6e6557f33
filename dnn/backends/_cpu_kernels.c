/* Fused float32 kernels for the cpu backend: one pass over memory where NumPy needs one pass
 * per operation.
 *
 * Each loop computes the same expression, in the same order of operations and with the same
 * float32 roundings, as the generic kernel of the same name in dnn/backends/base.py; setup.py
 * compiles it without contracting a*b+c into a fused multiply-add (-ffp-contract=off), so the
 * results are bit-for-bit those of NumPy, and tests/test_cpu_kernels.py pins them together.
 * Arrays are C-contiguous float32 buffers (checked here); scalars arrive already in the form the
 * generic kernel uses them (for example 1 - rho, computed by the caller in double precision).
 * Every loop runs with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
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
        for (int j = 0; j < i && views[i].buf != NULL; j++) {
            const char *a = views[i].buf, *b = views[j].buf;
            if (b != NULL && a < b + views[j].len && b < a + views[i].len) {
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

static PyMethodDef methods[] = {
    {"sgd", sgd, METH_VARARGS, sgd_doc},
    {"rmsprop", rmsprop, METH_VARARGS, rmsprop_doc},
    {"adam", adam, METH_VARARGS, adam_doc},
    {"bias_relu", bias_relu, METH_VARARGS, bias_relu_doc},
    {"relu_backward", relu_backward, METH_VARARGS, relu_backward_doc},
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
