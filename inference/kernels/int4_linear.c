/* Weight-only 4-bit linear for a few rows (decode steps), for the CPU.
 *
 * Weights are GGUF Q4_1 blocks in another order: w = q * scale + min, q in 0..15, a scale and
 * a minimum (float16, as in the GGUF) for each 32 weights along K. They are stored in tiles
 * of 16 outputs by 32 inputs (one group): 256 bytes of nibbles, byte [p][j] holding output
 * j's q at inputs 2p (low nibble) and 2p + 1 (high), then the tile's 16 scales and 16
 * minimums. y[m][n] = sum over groups of scale * sum(q x) + min * sum(x), in float32.
 *
 * Outputs are shared between the threads evenly, 16 at a time (torch's int4 kernel shares
 * them 64 at a time, so a 576-wide matrix splits 5 blocks to 4 and one core waits).
 *
 * x [rows][k] bf16 (row stride x_stride), tiles as above, y [rows][n] bf16 contiguous.
 * Needs AVX-512 (F16C conversions and vpermps); int4_linear_available() says whether this
 * build has it.
 */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bf16.h"

#define GROUP 32
#define TILE 16
#define TILE_BYTES (TILE * GROUP / 2 + 2 * TILE * 2)
#define MAX_ROWS 4
#define MAX_K 16384
#define PARALLEL_WEIGHTS (64 * 1024) /* smaller matrices run on the calling thread */

#if defined(__AVX512F__)
#include <immintrin.h>

int int4_linear_available(void) { return 1; }

static inline __attribute__((always_inline)) void tile_rows(const uint8_t *tiles, int64_t groups,
                                                            const float *xf, const float *xsum, int64_t k,
                                                            uint16_t *y, int64_t n, int64_t o, const int rows) {
    const __m512 iota = _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512 acc[MAX_ROWS];
    for (int m = 0; m < rows; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t *t = tiles + g * TILE_BYTES;
        __m512 a0[MAX_ROWS], a1[MAX_ROWS], a2[MAX_ROWS], a3[MAX_ROWS];
        for (int m = 0; m < rows; m++) a0[m] = a1[m] = a2[m] = a3[m] = _mm512_setzero_ps();
        for (int p = 0; p < GROUP / 2; p += 2) {
            const __m512i n0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(t + p * TILE)));
            const __m512i n1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(t + (p + 1) * TILE)));
            const __m512 w0 = _mm512_permutexvar_ps(n0, iota);
            const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(n0, 4), iota);
            const __m512 w2 = _mm512_permutexvar_ps(n1, iota);
            const __m512 w3 = _mm512_permutexvar_ps(_mm512_srli_epi32(n1, 4), iota);
            for (int m = 0; m < rows; m++) {
                const float *xg = xf + m * k + g * GROUP + 2 * p;
                a0[m] = _mm512_fmadd_ps(w0, _mm512_set1_ps(xg[0]), a0[m]);
                a1[m] = _mm512_fmadd_ps(w1, _mm512_set1_ps(xg[1]), a1[m]);
                a2[m] = _mm512_fmadd_ps(w2, _mm512_set1_ps(xg[2]), a2[m]);
                a3[m] = _mm512_fmadd_ps(w3, _mm512_set1_ps(xg[3]), a3[m]);
            }
        }
        const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(t + TILE * GROUP / 2)));
        const __m512 mins = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(t + TILE * GROUP / 2 + 2 * TILE)));
        for (int m = 0; m < rows; m++) {
            const __m512 dot = _mm512_add_ps(_mm512_add_ps(a0[m], a1[m]), _mm512_add_ps(a2[m], a3[m]));
            acc[m] = _mm512_fmadd_ps(scale, dot, acc[m]);
            acc[m] = _mm512_fmadd_ps(mins, _mm512_set1_ps(xsum[m * (k / GROUP) + g]), acc[m]);
        }
    }
    for (int m = 0; m < rows; m++) {
        float out[TILE];
        _mm512_storeu_ps(out, acc[m]);
        for (int j = 0; j < TILE; j++) y[m * n + o + j] = store_bf16(out[j]);
    }
}

static void tiles_range(const uint8_t *w, int64_t groups, const float *xf, const float *xsum, int64_t k,
                        uint16_t *y, int64_t n, int64_t rows, int64_t t0, int64_t t1) {
    for (int64_t b = t0; b < t1; b++) {
        const uint8_t *tiles = w + b * groups * TILE_BYTES;
        switch (rows) {
            case 1: tile_rows(tiles, groups, xf, xsum, k, y, n, b * TILE, 1); break;
            case 2: tile_rows(tiles, groups, xf, xsum, k, y, n, b * TILE, 2); break;
            case 3: tile_rows(tiles, groups, xf, xsum, k, y, n, b * TILE, 3); break;
            default: tile_rows(tiles, groups, xf, xsum, k, y, n, b * TILE, 4); break;
        }
    }
}

int int4_linear_bf16(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k, const uint8_t *w,
                     uint16_t *y, int64_t n, int nthreads) {
    if (k % GROUP || k > MAX_K || n % TILE) return 1;
    const int64_t groups = k / GROUP, ntiles = n / TILE;
    for (int64_t m0 = 0; m0 < rows; m0 += MAX_ROWS) {
        const int64_t mr = rows - m0 < MAX_ROWS ? rows - m0 : MAX_ROWS;
        float xf[MAX_ROWS * MAX_K], xsum[MAX_ROWS * (MAX_K / GROUP)];
        for (int64_t m = 0; m < mr; m++) {
            const uint16_t *xr = x + (m0 + m) * x_stride;
            for (int64_t i = 0; i < k; i++) xf[m * k + i] = load_bf16(xr[i]);
            for (int64_t g = 0; g < groups; g++) {
                float s = 0.0f;
                for (int j = 0; j < GROUP; j++) s += xf[m * k + g * GROUP + j];
                xsum[m * groups + g] = s;
            }
        }
        uint16_t *ym = y + m0 * n;
        #pragma omp parallel num_threads(nthreads) if(nthreads > 1 && n * k >= PARALLEL_WEIGHTS)
        {
            int64_t t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            tiles_range(w, groups, xf, xsum, k, ym, n, mr, ntiles * t / nt, ntiles * (t + 1) / nt);
        }
    }
    return 0;
}
#else
int int4_linear_available(void) { return 0; }

int int4_linear_bf16(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k, const uint8_t *w,
                     uint16_t *y, int64_t n, int nthreads) {
    (void)x; (void)x_stride; (void)rows; (void)k; (void)w; (void)y; (void)n; (void)nthreads;
    return 3;
}
#endif
