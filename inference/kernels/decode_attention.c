/* Decode attention over a paged KV cache, for the CPU.
 *
 * One query token per sequence attends to that sequence's keys, read in place from the
 * cache through its block table: no gather, no padding, no per-shape kernel. torch's SDPA
 * spends ~0.45 ms a layer on 16 rows of 200 keys (a few MFLOP: its cost is per-call and
 * per-block overhead), and the gather before it another 0.07 ms; this loop does the same
 * in a fraction of that (see inference/kernels/__init__.py for the measurement).
 *
 * Built by inference/kernels/__init__.py with the machine's C compiler (-O3 -march=native
 * -fopenmp), linked against the OpenMP runtime torch already loaded, so its threads are
 * the team torch's own ops use.
 *
 * Layouts (element strides):
 *   q      [nd rows][hq heads][d], row r at q + r * q_row_stride
 *   cache  [slots][hkv][d] for keys and for values, contiguous
 *   tables [nd][max_blocks] int32 block numbers; lengths [nd] int32 keys per row
 *   out    [nd][hq][d], contiguous
 * Query head h reads kv head h / (hq / hkv). Accumulates in float32.
 * window > 0: a row reads only its last `window` keys (sliding-window layers);
 * softcap > 0: scores become softcap * tanh(score / softcap) (Gemma 2).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#define MAX_HEAD_DIM 256
#define MAX_GROUP 16

#define DEFINE_DECODE_ATTENTION(NAME, T, LOAD, STORE)                                          \
int NAME(const T *q, int64_t q_row_stride, const T *cache_k, const T *cache_v,                 \
         const int32_t *tables, int64_t max_blocks, const int32_t *lengths, int64_t nd,         \
         int64_t hq, int64_t hkv, int64_t d, int64_t block_size, float scale, int64_t window,   \
         float softcap, T *out, int nthreads) {                                                                        \
    if (d > MAX_HEAD_DIM || hkv <= 0 || hq % hkv || hq / hkv > MAX_GROUP) return 1;            \
    const int64_t group = hq / hkv, items = nd * hkv;                                           \
    int failed = 0;                                                                             \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) reduction(|:failed)")     \
    for (int64_t item = 0; item < items; item++) {                                              \
        const int64_t r = item / hkv, kvh = item % hkv;                                         \
        const int64_t n = lengths[r];                                                           \
        const int64_t lo = window > 0 && n > window ? n - window : 0, nk = n - lo;             \
        const int32_t *table = tables + r * max_blocks;                                         \
        float qf[MAX_GROUP][MAX_HEAD_DIM], acc[MAX_GROUP][MAX_HEAD_DIM], row[MAX_HEAD_DIM];     \
        float best[MAX_GROUP], total[MAX_GROUP];                                                \
        for (int64_t g = 0; g < group; g++) {                                                   \
            const T *qh = q + r * q_row_stride + (kvh * group + g) * d;                         \
            for (int64_t i = 0; i < d; i++) { qf[g][i] = LOAD(qh[i]) * scale; acc[g][i] = 0.0f; } \
            best[g] = -FLT_MAX;                                                                 \
            total[g] = 0.0f;                                                                    \
        }                                                                                       \
        T *orow = out + (r * hq + kvh * group) * d;                                             \
        if (n <= 0) { for (int64_t i = 0; i < group * d; i++) orow[i] = STORE(0.0f); continue; } \
        float *scores = malloc((size_t)(nk * group) * sizeof(float)); /* [group][nk] */         \
        if (!scores) { failed = 1; continue; }                                                  \
        for (int64_t c0 = lo - lo % block_size; c0 < n; c0 += block_size) {                    \
            const T *kb = cache_k + ((int64_t)table[c0 / block_size] * block_size * hkv + kvh) * d; \
            const int64_t m = n - c0 < block_size ? n - c0 : block_size;                        \
            for (int64_t j = c0 < lo ? lo - c0 : 0; j < m; j++) {                               \
                const T *k = kb + j * hkv * d;                                                  \
                for (int64_t i = 0; i < d; i++) row[i] = LOAD(k[i]);                            \
                for (int64_t g = 0; g < group; g++) {                                           \
                    float dot = 0.0f;                                                           \
                    for (int64_t i = 0; i < d; i++) dot += qf[g][i] * row[i];                   \
                    if (softcap > 0.0f) dot = softcap * tanhf(dot / softcap);                   \
                    scores[g * nk + c0 + j - lo] = dot;                                         \
                    best[g] = dot > best[g] ? dot : best[g];                                    \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int64_t g = 0; g < group; g++) {                                                   \
            float *s = scores + g * nk, b = best[g], sum = 0.0f;                                \
            for (int64_t c = 0; c < nk; c++) { s[c] = expf(s[c] - b); sum += s[c]; }            \
            total[g] = sum;                                                                     \
        }                                                                                       \
        for (int64_t c0 = lo - lo % block_size; c0 < n; c0 += block_size) {                    \
            const T *vb = cache_v + ((int64_t)table[c0 / block_size] * block_size * hkv + kvh) * d; \
            const int64_t m = n - c0 < block_size ? n - c0 : block_size;                        \
            for (int64_t j = c0 < lo ? lo - c0 : 0; j < m; j++) {                               \
                const T *v = vb + j * hkv * d;                                                  \
                for (int64_t i = 0; i < d; i++) row[i] = LOAD(v[i]);                            \
                for (int64_t g = 0; g < group; g++) {                                           \
                    const float p = scores[g * nk + c0 + j - lo];                               \
                    for (int64_t i = 0; i < d; i++) acc[g][i] += p * row[i];                    \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        free(scores);                                                                           \
        for (int64_t g = 0; g < group; g++) {                                                   \
            const float inv = 1.0f / total[g];                                                  \
            for (int64_t i = 0; i < d; i++) orow[g * d + i] = STORE(acc[g][i] * inv);           \
        }                                                                                       \
    }                                                                                           \
    return failed ? 2 : 0;                                                                      \
}

DEFINE_DECODE_ATTENTION(decode_attention_bf16, uint16_t, load_bf16, store_bf16)
DEFINE_DECODE_ATTENTION(decode_attention_f32, float, load_f32, store_f32)
