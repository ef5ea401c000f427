/* Few-row matrix products and dequantization directly on GGUF quantized blocks, for the CPU.
 *
 * Ported from llama.cpp / ggml (https://github.com/ggml-org/llama.cpp), MIT License,
 * Copyright (c) 2023-2026 The ggml authors: the block layouts (ggml/src/ggml-common.h), the
 * reference dequantization and activation quantization (ggml/src/ggml-quants.c), the generic
 * dot products (ggml/src/ggml-cpu/quants.c) and the x86 AVX2 dot products and activation
 * quantizers (ggml/src/ggml-cpu/arch/x86/quants.c). The MIT license's notice applies to
 * those parts: "Permission is hereby granted, free of charge, to any person obtaining a copy
 * of this software ... THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND."
 *
 * y[m][n] = sum_k x[m][k] * W[n][k], W in a GGUF file's own bytes (n rows of k / block_elems
 * blocks). As llama.cpp does, each x row is first quantized to 8 bits per block (Q8_0 for
 * Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K types) and the products are integer dot
 * products per block, scaled by the blocks' float16 scales. The weight rows are shared between
 * the threads in equal contiguous ranges; each weight row is dotted with all m activation rows
 * while it is in L1.
 *
 * Paths: AVX2 + FMA (llama.cpp's x86 kernels; where the build also has AVX512-VNNI, the int8
 * pair sums of Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 use vpdpbusd, as llama.cpp does), else portable C
 * (llama.cpp's generic kernels). gguf_blocks_isa() names what was compiled in: "avx512" for a
 * build with AVX512F/BW/VL (the same 256-bit kernels, with the EVEX/VNNI forms the compiler and
 * the code pick), "avx2", or "scalar".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "bf16.h"

#if defined(__AVX2__) && defined(__FMA__)
#define GB_AVX2 1
#endif

#define PARALLEL_WORK (96 * 1024) /* n * k * m below this runs on the calling thread (a fork costs ~3 us) */
#define STACK_SCRATCH (24 * 1024)     /* quantized activations up to this size live on the stack */

/* ----------------------------------------------------------------- block layouts (ggml-common.h) */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* Weight blocks are packed: a GGUF row of them may start at any byte. */
typedef struct __attribute__((packed)) { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct __attribute__((packed)) { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct __attribute__((packed)) { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct __attribute__((packed)) { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct __attribute__((packed)) { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct __attribute__((packed)) { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1;
typedef struct __attribute__((packed)) {
    uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct __attribute__((packed)) {
    uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct __attribute__((packed)) {
    uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d;
} block_q6_K;
/* activations only (our own scratch) */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");

/* ----------------------------------------------------------------------------- fp16 <-> fp32 */

static inline float fp16_to_fp32(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    /* integer-only, so -ffast-math cannot change it */
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (e == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (e != 0) {
        bits = sign | ((e + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal half: normalize */
        int shift = 0;
        uint32_t m = mant;
        while (!(m & 0x400u)) { m <<= 1; shift++; }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

static inline uint16_t fp32_to_fp16(float f) {
#if defined(__F16C__)
    return (uint16_t)_cvtss_sh(f, 0); /* round to nearest even */
#else
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u); /* inf, nan */
    if (ax >= 0x477ff000u) return sign | 0x7c00u;                                      /* rounds to inf */
    if (ax < 0x38800000u) {                                                            /* half subnormal */
        if (ax < 0x33000000u) return sign;                                             /* <= 2^-25: 0 */
        const uint32_t e = ax >> 23, mant = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t s = 126u - e; /* 14..24 */
        uint32_t r = mant >> s;
        const uint32_t rem = mant & ((1u << s) - 1u), half = 1u << (s - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = ax - 0x38000000u; /* rebias the exponent */
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
#endif
}

/* -------------------------------------------------------------------------------- SIMD helpers */

#if GB_AVX2
#define MM256_SET_M128I(a, b) _mm256_insertf128_si256(_mm256_castsi128_si256(b), (a), 1)

static inline float hsum_float_8(const __m256 x) {
    __m128 res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

static inline int hsum_i32_8(const __m256i a) {
    const __m128i sum128 = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extractf128_si256(a, 1));
    const __m128i hi64 = _mm_unpackhi_epi64(sum128, sum128);
    const __m128i sum64 = _mm_add_epi32(hi64, sum128);
    const __m128i hi32 = _mm_shuffle_epi32(sum64, _MM_SHUFFLE(2, 3, 0, 1));
    return _mm_cvtsi128_si32(_mm_add_epi32(sum64, hi32));
}

static inline float hmax_float_8(const __m256 x) {
    __m128 max4 = _mm_max_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
    max4 = _mm_max_ss(max4, _mm_movehdup_ps(max4));
    return _mm_cvtss_f32(max4);
}

/* spread 32 bits to 32 bytes { 0x00, 0xFF } */
static inline __m256i bytes_from_bits_32(const uint8_t *x) {
    uint32_t x32;
    memcpy(&x32, x, sizeof(uint32_t));
    const __m256i shuf_mask = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf_mask);
    const __m256i bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* 32 4-bit fields to 32 bytes in 0..15: low nibbles first, then the high ones */
static inline __m256i bytes_from_nibbles_32(const uint8_t *rsi) {
    const __m128i tmp = _mm_loadu_si128((const __m128i *)rsi);
    const __m256i bytes = MM256_SET_M128I(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0xF), bytes);
}

static inline __m256 sum_i16_pairs_float(const __m256i x) {
    const __m256i summed_pairs = _mm256_madd_epi16(_mm256_set1_epi16(1), x);
    return _mm256_cvtepi32_ps(summed_pairs);
}

/* unsigned ax times signed sy, four products summed per int32, as floats */
static inline __m256 mul_sum_us8_pairs_float(const __m256i ax, const __m256i sy) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy));
#elif defined(__AVXVNNI__)
    return _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy));
#else
    return sum_i16_pairs_float(_mm256_maddubs_epi16(ax, sy));
#endif
}

static inline __m256 mul_sum_i8_pairs_float(const __m256i x, const __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    return mul_sum_us8_pairs_float(ax, sy);
}

static inline __m256i get_scale_shuffle_k4(int i) {
    static const uint8_t k_shuffle[256] = {
         0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
         2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
         4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
         6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
         8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
        10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,10,11,
        12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,12,13,
        14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15,14,15
    };
    return _mm256_loadu_si256((const __m256i *)k_shuffle + i);
}

static inline __m128i get_scale_shuffle(int i) {
    static const uint8_t k_shuffle[128] = {
         0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
         4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5,
         6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7,
         8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9,
        10,10,10,10,10,10,10,10, 11,11,11,11,11,11,11,11,
        12,12,12,12,12,12,12,12, 13,13,13,13,13,13,13,13,
        14,14,14,14,14,14,14,14, 15,15,15,15,15,15,15,15
    };
    return _mm_loadu_si128((const __m128i *)k_shuffle + i);
}

/* 32 floats * id, rounded to nearest even, to 32 int8 in order (llama.cpp's quantize_row_q8_0);
   *isum gets the sum of the quants */
static inline void round_store_32(const __m256 v0_, const __m256 v1_, const __m256 v2_, const __m256 v3_,
                                  const float id, int8_t *out, int *isum) {
    const __m256 mul = _mm256_set1_ps(id);
    const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0_, mul), mode));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1_, mul), mode));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2_, mul), mode));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3_, mul), mode));
    if (isum) *isum = hsum_i32_8(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)out, i0);
}
#endif /* GB_AVX2 */

/* ----------------------------------------------------------- activation quantizers (one row) */

static void quantize_row_q8_0(const float *x, void *vy, int64_t k) {
    block_q8_0 *y = vy;
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; i++, x += QK8_0) {
#if GB_AVX2
        const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 amax = _mm256_andnot_ps(sign, v0);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v1));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v2));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v3));
        const float max_scalar = hmax_float_8(amax);
        const float d = max_scalar / 127.f;
        y[i].d = fp32_to_fp16(d);
        round_store_32(v0, v1, v2, v3, max_scalar != 0.0f ? 127.f / max_scalar : 0.0f, y[i].qs, NULL);
#else
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
#endif
    }
}

static void quantize_row_q8_1(const float *x, void *vy, int64_t k) {
    block_q8_1 *y = vy;
    const int64_t nb = k / QK8_1;
    for (int64_t i = 0; i < nb; i++, x += QK8_1) {
#if GB_AVX2
        const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 amax = _mm256_andnot_ps(sign, v0);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v1));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v2));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v3));
        const float max_scalar = hmax_float_8(amax);
        const float d = max_scalar / 127.f;
        int sum = 0;
        round_store_32(v0, v1, v2, v3, max_scalar != 0.0f ? 127.f / max_scalar : 0.0f, y[i].qs, &sum);
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(d * (float)sum);
#else
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(d * (float)sum);
#endif
    }
}

/* llama.cpp's quantize_row_q8_K_ref: the element of largest magnitude maps to -127 */
static void quantize_row_q8_K(const float *x, void *vy, int64_t k) {
    block_q8_K *y = vy;
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float amax = 0.0f, max = 0.0f;
#if GB_AVX2
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        amax = hmax_float_8(vmax);
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) == amax) { max = x[j]; break; }
        }
#else
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
#endif
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
#if GB_AVX2
        const __m256 mul = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        for (int j = 0; j < QK_K; j += 32) {
            __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), mul), mode));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), mul), mode));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 16), mul), mode));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 24), mul), mode));
            i0 = _mm256_min_epi32(i0, lim);
            i1 = _mm256_min_epi32(i1, lim);
            i2 = _mm256_min_epi32(i2, lim);
            i3 = _mm256_min_epi32(i3, lim);
            y[i].bsums[j / 16] = (int16_t)hsum_i32_8(_mm256_add_epi32(i0, i1));
            y[i].bsums[j / 16 + 1] = (int16_t)hsum_i32_8(_mm256_add_epi32(i2, i3));
            i0 = _mm256_packs_epi32(i0, i1);
            i2 = _mm256_packs_epi32(i2, i3);
            i0 = _mm256_packs_epi16(i0, i2);
            i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), i0);
        }
#else
        for (int j = 0; j < QK_K; j++) {
            const int v = (int)lrintf(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
#endif
        y[i].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------------ dequantization (one row) */

static void dequantize_row_q4_0(const void *vx, float *y, int64_t k) {
    const block_q4_0 *x = vx;
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[i * QK4_0 + j] = (float)((x[i].qs[j] & 0x0F) - 8) * d;
            y[i * QK4_0 + j + QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequantize_row_q4_1(const void *vx, float *y, int64_t k) {
    const block_q4_1 *x = vx;
    const int64_t nb = k / QK4_1;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[i * QK4_1 + j] = (float)(x[i].qs[j] & 0x0F) * d + m;
            y[i * QK4_1 + j + QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequantize_row_q5_0(const void *vx, float *y, int64_t k) {
    const block_q5_0 *x = vx;
    const int64_t nb = k / QK5_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const int xh_1 = ((qh >> (j + 12))) & 0x10;
            y[i * QK5_0 + j] = (float)(((x[i].qs[j] & 0x0F) | xh_0) - 16) * d;
            y[i * QK5_0 + j + QK5_0 / 2] = (float)(((x[i].qs[j] >> 4) | xh_1) - 16) * d;
        }
    }
}

static void dequantize_row_q5_1(const void *vx, float *y, int64_t k) {
    const block_q5_1 *x = vx;
    const int64_t nb = k / QK5_1;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const int xh_1 = ((qh >> (j + 12))) & 0x10;
            y[i * QK5_1 + j] = (float)((x[i].qs[j] & 0x0F) | xh_0) * d + m;
            y[i * QK5_1 + j + QK5_1 / 2] = (float)((x[i].qs[j] >> 4) | xh_1) * d + m;
        }
    }
}

static void dequantize_row_q8_0(const void *vx, float *y, int64_t k) {
    const block_q8_0 *x = vx;
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; j++) y[i * QK8_0 + j] = (float)x[i].qs[j] * d;
    }
}

static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

static void dequantize_row_q4_K(const void *vx, float *y, int64_t k) {
    const block_q4_K *x = vx;
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        uint8_t sc, m;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequantize_row_q5_K(const void *vx, float *y, int64_t k) {
    const block_q5_K *x = vx;
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dequantize_row_q6_K(const void *vx, float *y, int64_t k) {
    const block_q6_K *x = vx;
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        float dl[QK_K / 16];
        for (int j = 0; j < QK_K / 16; j++) dl[j] = d * (float)x[i].scales[j];
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32) {
            const float *s = dl + n / 16;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = s[is + 0] * (float)q1;
                y[l + 32] = s[is + 2] * (float)q2;
                y[l + 64] = s[is + 4] * (float)q3;
                y[l + 96] = s[is + 6] * (float)q4;
            }
        }
    }
}

/* ------------------------------------------------------------------------------ dot products */
/* Each returns sum_j w[j] * a[j] over n elements: one weight row against one quantized x row. */

static float dot_q4_0_q8_0(int64_t n, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK8_0;
#if GB_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256 d = _mm256_set1_ps(fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d));
        __m256i qx = bytes_from_nibbles_32(x[ib].qs);
        qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc);
#else
    float sumf = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            const int v0 = (x[ib].qs[j] & 0x0F) - 8;
            const int v1 = (x[ib].qs[j] >> 4) - 8;
            sumi0 += v0 * y[ib].qs[j];
            sumi1 += v1 * y[ib].qs[j + QK8_0 / 2];
        }
        sumf += (float)(sumi0 + sumi1) * fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
    }
    return sumf;
#endif
}

static float dot_q4_1_q8_1(int64_t n, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    const int64_t nb = n / QK8_1;
#if GB_AVX2
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const float d0 = fp16_to_fp32(x[ib].d), d1 = fp16_to_fp32(y[ib].d);
        summs += fp16_to_fp32(x[ib].m) * fp16_to_fp32(y[ib].s);
        const __m256 d0d1 = _mm256_set1_ps(d0 * d1);
        const __m256i qx = bytes_from_nibbles_32(x[ib].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc = _mm256_fmadd_ps(d0d1, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc) + summs;
#else
    float sumf = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            sumi0 += (x[ib].qs[j] & 0x0F) * y[ib].qs[j];
            sumi1 += (x[ib].qs[j] >> 4) * y[ib].qs[j + QK8_1 / 2];
        }
        sumf += (fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d)) * (float)(sumi0 + sumi1)
                + fp16_to_fp32(x[ib].m) * fp16_to_fp32(y[ib].s);
    }
    return sumf;
#endif
}

static float dot_q5_0_q8_0(int64_t n, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK8_0;
#if GB_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256 d = _mm256_set1_ps(fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d));
        __m256i qx = bytes_from_nibbles_32(x[ib].qs);
        __m256i bxhi = bytes_from_bits_32(x[ib].qh);
        bxhi = _mm256_andnot_si256(bxhi, _mm256_set1_epi8((char)0xF0));
        qx = _mm256_or_si256(qx, bxhi);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc);
#else
    float sumf = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        uint32_t qh;
        memcpy(&qh, x[ib].qh, sizeof qh);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            const int xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const int xh_1 = ((qh >> (j + 12))) & 0x10;
            const int x0 = ((x[ib].qs[j] & 0x0F) | xh_0) - 16;
            const int x1 = ((x[ib].qs[j] >> 4) | xh_1) - 16;
            sumi0 += x0 * y[ib].qs[j];
            sumi1 += x1 * y[ib].qs[j + QK8_0 / 2];
        }
        sumf += (fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d)) * (float)(sumi0 + sumi1);
    }
    return sumf;
#endif
}

static float dot_q5_1_q8_1(int64_t n, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    const int64_t nb = n / QK8_1;
#if GB_AVX2
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256 dx = _mm256_set1_ps(fp16_to_fp32(x[ib].d));
        summs += fp16_to_fp32(x[ib].m) * fp16_to_fp32(y[ib].s);
        __m256i qx = bytes_from_nibbles_32(x[ib].qs);
        __m256i bxhi = bytes_from_bits_32(x[ib].qh);
        bxhi = _mm256_and_si256(bxhi, _mm256_set1_epi8(0x10));
        qx = _mm256_or_si256(qx, bxhi);
        const __m256 dy = _mm256_set1_ps(fp16_to_fp32(y[ib].d));
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc = _mm256_fmadd_ps(mul_sum_us8_pairs_float(qx, qy), _mm256_mul_ps(dx, dy), acc);
    }
    return hsum_float_8(acc) + summs;
#else
    float sumf = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        uint32_t qh;
        memcpy(&qh, x[ib].qh, sizeof qh);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            const int xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
            const int xh_1 = ((qh >> (j + 12))) & 0x10;
            sumi0 += ((x[ib].qs[j] & 0xF) | xh_0) * y[ib].qs[j];
            sumi1 += ((x[ib].qs[j] >> 4) | xh_1) * y[ib].qs[j + QK8_1 / 2];
        }
        sumf += (fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d)) * (float)(sumi0 + sumi1)
                + fp16_to_fp32(x[ib].m) * fp16_to_fp32(y[ib].s);
    }
    return sumf;
#endif
}

static float dot_q8_0_q8_0(int64_t n, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK8_0;
#if GB_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ++ib) {
        const __m256 d = _mm256_set1_ps(fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d));
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc);
#else
    float sumf = 0;
    for (int64_t ib = 0; ib < nb; ++ib) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[ib].qs[j] * y[ib].qs[j];
        sumf += (float)sumi * (fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d));
    }
    return sumf;
#endif
}

static const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;

/* the 8 six-bit scales to bytes 0..7 and the 8 mins to bytes 8..15 of utmp */
static inline void unpack_scales_k4(const uint8_t *scales, uint32_t utmp[4]) {
    memcpy(utmp, scales, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
}

static float dot_q4_K_q8_K(int64_t n, const void *vx, const void *vy) {
    const block_q4_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / QK_K;
    uint32_t utmp[4];
#if GB_AVX2
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = -y[i].d * fp16_to_fp32(x[i].dmin);
        unpack_scales_k4(x[i].scales, utmp);
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2],
                                                                            (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = MM256_SET_M128I(sc128, sc128);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_l = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 0));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));
            const __m256i q4bits = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4l = _mm256_and_si256(q4bits, m4);
            const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            const __m256i q8l = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            __m256i p16l = _mm256_maddubs_epi16(q4l, q8l);
            p16l = _mm256_madd_epi16(scale_l, p16l);
            const __m256i q8h = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            __m256i p16h = _mm256_maddubs_epi16(q4h, q8h);
            p16h = _mm256_madd_epi16(scale_h, p16h);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    return hsum_float_8(acc) + _mm_cvtss_f32(acc_m);
#else
    const uint8_t *scales = (const uint8_t *)&utmp[0];
    const uint8_t *mins = (const uint8_t *)&utmp[2];
    int8_t aux8[QK_K];
    int32_t aux32[8];
    float sums[8] = {0};
    float sumf = 0;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        for (int j = 0; j < QK_K / 64; ++j, q4 += 32) {
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)(q4[l] & 0xF);
            a += 32;
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)(q4[l] >> 4);
            a += 32;
        }
        unpack_scales_k4(x[i].scales, utmp);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; ++j) sumi += y[i].bsums[j] * mins[j / 2];
        a = aux8;
        for (int j = 0; j < QK_K / 32; ++j) {
            const int32_t scale = scales[j];
            for (int g = 0; g < 4; ++g, q8 += 8, a += 8)
                for (int l = 0; l < 8; ++l) aux32[l] += scale * (q8[l] * a[l]);
        }
        const float d = fp16_to_fp32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * (float)aux32[l];
        const float dmin = fp16_to_fp32(x[i].dmin) * y[i].d;
        sumf -= dmin * (float)sumi;
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
#endif
}

static float dot_q5_K_q8_K(int64_t n, const void *vx, const void *vy) {
    const block_q5_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / QK_K;
    uint32_t utmp[4];
#if GB_AVX2
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m128i mzero = _mm_setzero_si128();
    const __m256i mone = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.f;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *q5 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = -y[i].d * fp16_to_fp32(x[i].dmin);
        unpack_scales_k4(x[i].scales, utmp);
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2],
                                                                            (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        const __m128i hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, mzero), mzero);
        summs += dmin * (float)_mm_extract_epi32(hsum, 0);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = MM256_SET_M128I(sc128, sc128);
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)x[i].qh);
        __m256i hmask = mone;
        __m256i sumi = _mm256_setzero_si256();
        int bit = 0;
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_0 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 0));
            const __m256i scale_1 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));
            const __m256i q5bits = _mm256_loadu_si256((const __m256i *)q5);
            q5 += 32;
            const __m256i q5l_0 = _mm256_and_si256(q5bits, m4);
            const __m256i q5h_0 = _mm256_slli_epi16(_mm256_srli_epi16(_mm256_and_si256(hbits, hmask), bit), 4);
            bit++;
            const __m256i q5_0 = _mm256_add_epi8(q5l_0, q5h_0);
            hmask = _mm256_slli_epi16(hmask, 1);
            const __m256i q5l_1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
            const __m256i q5h_1 = _mm256_slli_epi16(_mm256_srli_epi16(_mm256_and_si256(hbits, hmask), bit), 4);
            bit++;
            const __m256i q5_1 = _mm256_add_epi8(q5l_1, q5h_1);
            hmask = _mm256_slli_epi16(hmask, 1);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            __m256i p16_0 = _mm256_maddubs_epi16(q5_0, q8_0);
            __m256i p16_1 = _mm256_maddubs_epi16(q5_1, q8_1);
            p16_0 = _mm256_madd_epi16(scale_0, p16_0);
            p16_1 = _mm256_madd_epi16(scale_1, p16_1);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_float_8(acc) + summs;
#else
    const uint8_t *scales = (const uint8_t *)&utmp[0];
    const uint8_t *mins = (const uint8_t *)&utmp[2];
    int8_t aux8[QK_K];
    int32_t aux32[8];
    float sums[8] = {0};
    float sumf = 0;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *q4 = x[i].qs, *hm = x[i].qh;
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        uint8_t m = 1;
        for (int j = 0; j < QK_K / 64; ++j, q4 += 32) {
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)((q4[l] & 0xF) + (hm[l] & m ? 16 : 0));
            a += 32;
            m <<= 1;
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)((q4[l] >> 4) + (hm[l] & m ? 16 : 0));
            a += 32;
            m <<= 1;
        }
        unpack_scales_k4(x[i].scales, utmp);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; ++j) sumi += y[i].bsums[j] * mins[j / 2];
        a = aux8;
        for (int j = 0; j < QK_K / 32; ++j) {
            const int32_t scale = scales[j];
            for (int g = 0; g < 4; ++g, q8 += 8, a += 8)
                for (int l = 0; l < 8; ++l) aux32[l] += scale * (q8[l] * a[l]);
        }
        const float d = fp16_to_fp32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * (float)aux32[l];
        const float dmin = fp16_to_fp32(x[i].dmin) * y[i].d;
        sumf -= dmin * (float)sumi;
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
#endif
}

static float dot_q6_K_q8_K(int64_t n, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / QK_K;
#if GB_AVX2
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const uint8_t *q4 = x[i].ql, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        const __m128i scales = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i scales_16 = _mm256_cvtepi8_epi16(scales);
        const __m256i q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
        __m256i sumi = _mm256_setzero_si256();
        int is = 0;
        for (int j = 0; j < QK_K / 128; ++j) {
            const __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4bitsH = _mm256_loadu_si256((const __m256i *)qh);
            qh += 32;
            const __m256i q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bitsH, m3), 4);
            const __m256i q4h_1 = _mm256_slli_epi16(_mm256_and_si256(q4bitsH, _mm256_set1_epi8(12)), 2);
            const __m256i q4h_2 = _mm256_and_si256(q4bitsH, _mm256_set1_epi8(48));
            const __m256i q4h_3 = _mm256_srli_epi16(_mm256_and_si256(q4bitsH, _mm256_set1_epi8(-64)), 2);
            const __m256i q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m15), q4h_0);
            const __m256i q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m15), q4h_1);
            const __m256i q4_2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m15), q4h_2);
            const __m256i q4_3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m15), q4h_3);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_2 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_3 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            __m256i p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
            __m256i p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
            __m256i p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
            __m256i p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);
            const __m128i scale_0 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 0));
            const __m128i scale_1 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 1));
            const __m128i scale_2 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 2));
            const __m128i scale_3 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 3));
            is += 4;
            p16_0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_0), p16_0);
            p16_1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_1), p16_1);
            p16_2 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_2), p16_2);
            p16_3 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_3), p16_3);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_float_8(acc);
#else
    int8_t aux8[QK_K];
    int32_t aux32[8];
    float sums[8] = {0};
    float sumf = 0;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *q4 = x[i].ql, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        for (int j = 0; j < QK_K; j += 128, a += 128, q4 += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                a[l + 0] = (int8_t)(((q4[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                a[l + 32] = (int8_t)(((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                a[l + 64] = (int8_t)(((q4[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                a[l + 96] = (int8_t)(((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        a = aux8;
        for (int j = 0; j < QK_K / 16; ++j) {
            const int scale = x[i].scales[j];
            for (int g = 0; g < 2; ++g, q8 += 8, a += 8)
                for (int l = 0; l < 8; ++l) aux32[l] += scale * (q8[l] * a[l]);
        }
        const float d = fp16_to_fp32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * (float)aux32[l];
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
#endif
}

/* -------------------------------------------------------------------------------- type table */

typedef float (*dot_fn)(int64_t n, const void *w, const void *a);
typedef void (*row_fn)(const void *w, float *y, int64_t k);
typedef void (*quant_fn)(const float *x, void *y, int64_t k);

typedef struct {
    int64_t blck, bytes;         /* weight block: elements, bytes */
    int64_t act_blck, act_bytes; /* activation block */
    quant_fn quant;
    dot_fn dot;
    row_fn dequant;
} traits_t;

static const traits_t T_Q4_0 = {QK4_0, sizeof(block_q4_0), QK8_0, sizeof(block_q8_0), quantize_row_q8_0,
                                dot_q4_0_q8_0, dequantize_row_q4_0};
static const traits_t T_Q4_1 = {QK4_1, sizeof(block_q4_1), QK8_1, sizeof(block_q8_1), quantize_row_q8_1,
                                dot_q4_1_q8_1, dequantize_row_q4_1};
static const traits_t T_Q5_0 = {QK5_0, sizeof(block_q5_0), QK8_0, sizeof(block_q8_0), quantize_row_q8_0,
                                dot_q5_0_q8_0, dequantize_row_q5_0};
static const traits_t T_Q5_1 = {QK5_1, sizeof(block_q5_1), QK8_1, sizeof(block_q8_1), quantize_row_q8_1,
                                dot_q5_1_q8_1, dequantize_row_q5_1};
static const traits_t T_Q8_0 = {QK8_0, sizeof(block_q8_0), QK8_0, sizeof(block_q8_0), quantize_row_q8_0,
                                dot_q8_0_q8_0, dequantize_row_q8_0};
static const traits_t T_Q4_K = {QK_K, sizeof(block_q4_K), QK_K, sizeof(block_q8_K), quantize_row_q8_K,
                                dot_q4_K_q8_K, dequantize_row_q4_K};
static const traits_t T_Q5_K = {QK_K, sizeof(block_q5_K), QK_K, sizeof(block_q8_K), quantize_row_q8_K,
                                dot_q5_K_q8_K, dequantize_row_q5_K};
static const traits_t T_Q6_K = {QK_K, sizeof(block_q6_K), QK_K, sizeof(block_q8_K), quantize_row_q8_K,
                                dot_q6_K_q8_K, dequantize_row_q6_K};

static const traits_t *traits_of(int type) {
    switch (type) { /* ggml type ids */
    case 2: return &T_Q4_0;
    case 3: return &T_Q4_1;
    case 6: return &T_Q5_0;
    case 7: return &T_Q5_1;
    case 8: return &T_Q8_0;
    case 12: return &T_Q4_K;
    case 13: return &T_Q5_K;
    case 14: return &T_Q6_K;
    default: return NULL;
    }
}

/* ----------------------------------------------------------------------------------- exports */

int gguf_block_info(int type, int64_t *block_elems, int64_t *block_bytes) {
    const traits_t *t = traits_of(type);
    if (!t) return 1;
    if (block_elems) *block_elems = t->blck;
    if (block_bytes) *block_bytes = t->bytes;
    return 0;
}

const char *gguf_blocks_isa(void) {
#if GB_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return "avx512";
#elif GB_AVX2
    return "avx2";
#else
    return "scalar";
#endif
}

static inline int thread_count(int nthreads) { return nthreads > 1 ? nthreads : 1; }

/* one x row (float32 or bf16) to activation blocks */
static inline void quantize_x(const traits_t *t, const void *xrow, int64_t k, unsigned char *dst, const int bf16) {
    if (!bf16) {
        t->quant((const float *)xrow, dst, k);
        return;
    }
    float buf[QK_K];
    const uint16_t *xr = xrow;
    for (int64_t j = 0; j < k; j += QK_K) {
        const int64_t c = k - j < QK_K ? k - j : QK_K; /* a multiple of act_blck */
        for (int64_t i = 0; i < c; i++) buf[i] = load_bf16(xr[j + i]);
        t->quant(buf, dst, c);
        dst += c / t->act_blck * t->act_bytes;
    }
}

static inline __attribute__((always_inline)) int linear_impl(int type, const void *w, int64_t n, int64_t k,
                                                             const void *x, int64_t x_stride, int64_t m,
                                                             void *y, int nthreads, const int bf16) {
    const traits_t *t = traits_of(type);
    if (!t || n < 0 || m < 0 || k <= 0 || k % t->blck || k > ((int64_t)1 << 40)) return 1;
    if (n == 0 || m == 0) return 0;
    if (!w || !x || !y || (m > 1 && x_stride < 0)) return 1;
    const int64_t row_bytes = k / t->blck * t->bytes;
    const int64_t act_row = k / t->act_blck * t->act_bytes;
    const size_t need = (size_t)(m * act_row);
    _Alignas(64) unsigned char stack[STACK_SCRATCH];
    unsigned char *scratch = need <= sizeof stack ? stack : malloc(need);
    if (!scratch) return 2;
    const size_t esize = bf16 ? sizeof(uint16_t) : sizeof(float);
    nthreads = thread_count(nthreads);

    #pragma omp parallel num_threads(nthreads) if(nthreads > 1 && n * k * m >= PARALLEL_WORK)
    {
        int64_t tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        for (int64_t i = tid; i < m; i += nt)
            quantize_x(t, (const char *)x + (size_t)(i * x_stride) * esize, k, scratch + i * act_row, bf16);
        #pragma omp barrier
        const int64_t r0 = n * tid / nt, r1 = n * (tid + 1) / nt;
        const dot_fn dot = t->dot;
        for (int64_t r = r0; r < r1; r++) {
            const void *wr = (const unsigned char *)w + r * row_bytes;
            for (int64_t i = 0; i < m; i++) {
                const float s = dot(k, wr, scratch + i * act_row);
                if (bf16) ((uint16_t *)y)[i * n + r] = store_bf16(s);
                else ((float *)y)[i * n + r] = s;
            }
        }
    }
    if (scratch != stack) free(scratch);
    return 0;
}

int gguf_linear_f32(int type, const void *w, int64_t n, int64_t k, const float *x, int64_t x_stride, int64_t m,
                    float *y, int nthreads) {
    return linear_impl(type, w, n, k, x, x_stride, m, y, nthreads, 0);
}

int gguf_linear_bf16(int type, const void *w, int64_t n, int64_t k, const uint16_t *x, int64_t x_stride,
                     int64_t m, uint16_t *y, int nthreads) {
    return linear_impl(type, w, n, k, x, x_stride, m, y, nthreads, 1);
}

static inline __attribute__((always_inline)) int dequantize_impl(int type, const void *w, int64_t k,
                                                                 const int64_t *rows, int64_t count, void *out,
                                                                 int nthreads, const int bf16) {
    const traits_t *t = traits_of(type);
    if (!t || count < 0 || k <= 0 || k % t->blck || k > ((int64_t)1 << 40)) return 1;
    if (count == 0) return 0;
    if (!w || !out) return 1;
    if (rows) {
        for (int64_t i = 0; i < count; i++)
            if (rows[i] < 0) return 1;
    }
    const int64_t row_bytes = k / t->blck * t->bytes;
    nthreads = thread_count(nthreads);
    #pragma omp parallel for num_threads(nthreads) schedule(static) if(nthreads > 1 && count * k >= PARALLEL_WORK)
    for (int64_t i = 0; i < count; i++) {
        const unsigned char *wr = (const unsigned char *)w + (rows ? rows[i] : i) * row_bytes;
        if (!bf16) {
            t->dequant(wr, (float *)out + i * k, k);
        } else {
            float buf[QK_K];
            uint16_t *o = (uint16_t *)out + i * k;
            for (int64_t j = 0; j < k; j += t->blck) {
                t->dequant(wr + j / t->blck * t->bytes, buf, t->blck);
                for (int64_t l = 0; l < t->blck; l++) o[j + l] = store_bf16(buf[l]);
            }
        }
    }
    return 0;
}

int gguf_dequantize_f32(int type, const void *w, int64_t k, const int64_t *rows, int64_t count, float *out,
                        int nthreads) {
    return dequantize_impl(type, w, k, rows, count, out, nthreads, 0);
}

int gguf_dequantize_bf16(int type, const void *w, int64_t k, const int64_t *rows, int64_t count, uint16_t *out,
                         int nthreads) {
    return dequantize_impl(type, w, k, rows, count, out, nthreads, 1);
}

