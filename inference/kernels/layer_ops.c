/* The small per-layer operations of a Llama block, each one pass over the rows, for the CPU.
 *
 * In torch each is several ops (RMSNorm as cat + layer_norm + slice, RoPE as mul + roll +
 * addcmul, the cache writes as two index_copy_, SiLU-and-multiply as slice + silu + mul), and
 * at one decode row every op costs microseconds of dispatch for nanoseconds of work: about a
 * fifth of a one-stream token. Here they are three calls a layer. Float32 inside, rounded
 * once to the storage type at the end.
 *
 * Shapes (element strides; rows may be strided where a stride is given):
 *   add_rms_norm  x [rows][h] (stride x_stride, updated in place when delta is given),
 *                 delta [rows][h] contiguous or NULL, weight [h], out [rows][h] contiguous
 *   rope_store    qkv [rows][(hq + 2 hkv) d] contiguous: q and k heads rotated in place,
 *                 then k and v copied to cache slot slots[r] of cache_k/cache_v [S][hkv][d];
 *                 cos/sin [positions][d] (sin sign-folded: rope(x) = x cos + roll(x, d/2) sin)
 *   silu_mul      gu [rows][2 inter] contiguous -> out [rows][inter] (gelu_tanh_mul alike)
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"

/* rows below this run on the calling thread: a fork/join costs more than the work */
#define PARALLEL_ROWS 8
#define MAX_DIM 16384

static inline float silu(float a) { return a / (1.0f + expf(-a)); }
static inline float gelu_tanh(float a) { /* Gemma's MLP */
    return 0.5f * a * (1.0f + tanhf(0.7978845608028654f * (a + 0.044715f * a * a * a)));
}

/* act(gate) * up, gu [rows][2 inter] (gate first) -> out [rows][inter] */
#define DEFINE_GATED(NAME, T, LOAD, STORE, ACT)                                                  \
int NAME(const T *gu, T *out, int64_t rows, int64_t inter, int nthreads) {                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if(rows >= PARALLEL_ROWS)") \
    for (int64_t r = 0; r < rows; r++) {                                                         \
        const T *g = gu + r * 2 * inter, *u = g + inter;                                         \
        T *o = out + r * inter;                                                                  \
        for (int64_t i = 0; i < inter; i++) o[i] = STORE(ACT(LOAD(g[i])) * LOAD(u[i]));          \
    }                                                                                            \
    return 0;                                                                                    \
}

#define DEFINE_LAYER_OPS(SUFFIX, T, LOAD, STORE)                                                 \
int add_rms_norm_##SUFFIX(T *x, int64_t x_stride, const T *delta, const T *weight, T *out,       \
                          int64_t rows, int64_t h, float eps, int nthreads) {                    \
    if (h > MAX_DIM) return 1;                                                                   \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if(rows >= PARALLEL_ROWS)") \
    for (int64_t r = 0; r < rows; r++) {                                                         \
        T *xr = x + r * x_stride;                                                                \
        float v[MAX_DIM];                                                                        \
        float ss = 0.0f;                                                                         \
        if (delta) {                                                                             \
            const T *dr = delta + r * h;                                                         \
            for (int64_t i = 0; i < h; i++) {                                                    \
                xr[i] = STORE(LOAD(xr[i]) + LOAD(dr[i])); /* the residual, as torch rounds it */ \
                v[i] = LOAD(xr[i]);                                                              \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t i = 0; i < h; i++) v[i] = LOAD(xr[i]);                                  \
        }                                                                                        \
        for (int64_t i = 0; i < h; i++) ss += v[i] * v[i];                                       \
        const float scale = 1.0f / sqrtf(ss / (float)h + eps);                                   \
        T *o = out + r * h;                                                                      \
        for (int64_t i = 0; i < h; i++) o[i] = STORE(v[i] * scale * LOAD(weight[i]));            \
    }                                                                                            \
    return 0;                                                                                    \
}                                                                                                \
                                                                                                 \
int rope_store_##SUFFIX(T *qkv, int64_t rows, const int64_t *positions, const T *cos_table,     \
                        const T *sin_table, int64_t hq, int64_t hkv, int64_t d, T *cache_k,      \
                        T *cache_v, const int64_t *slots, int nthreads) {                        \
    if (d > MAX_DIM || d % 2) return 1;                                                          \
    const int64_t half = d / 2, width = (hq + 2 * hkv) * d;                                      \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if(rows >= PARALLEL_ROWS)") \
    for (int64_t r = 0; r < rows; r++) {                                                         \
        T *row = qkv + r * width;                                                                \
        const T *c = cos_table + positions[r] * d, *s = sin_table + positions[r] * d;            \
        float cf[MAX_DIM], sf[MAX_DIM], x[MAX_DIM];                                              \
        for (int64_t i = 0; i < d; i++) { cf[i] = LOAD(c[i]); sf[i] = LOAD(s[i]); }              \
        for (int64_t head = 0; head < hq + hkv; head++) {                                        \
            T *p = row + head * d;                                                               \
            for (int64_t i = 0; i < d; i++) x[i] = LOAD(p[i]);                                   \
            for (int64_t i = 0; i < half; i++) {                                                 \
                p[i] = STORE(x[i] * cf[i] + x[i + half] * sf[i]);                                \
                p[i + half] = STORE(x[i + half] * cf[i + half] + x[i] * sf[i + half]);           \
            }                                                                                    \
        }                                                                                        \
        const int64_t slot = slots[r];                                                           \
        memcpy(cache_k + slot * hkv * d, row + hq * d, (size_t)(hkv * d) * sizeof(T));           \
        memcpy(cache_v + slot * hkv * d, row + (hq + hkv) * d, (size_t)(hkv * d) * sizeof(T));   \
    }                                                                                            \
    return 0;                                                                                    \
}                                                                                                \
                                                                                                 \
DEFINE_GATED(silu_mul_##SUFFIX, T, LOAD, STORE, silu)                                              \
DEFINE_GATED(gelu_tanh_mul_##SUFFIX, T, LOAD, STORE, gelu_tanh)

DEFINE_LAYER_OPS(bf16, uint16_t, load_bf16, store_bf16)
DEFINE_LAYER_OPS(f32, float, load_f32, store_f32)
