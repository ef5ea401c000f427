/* bf16 <-> float32 for the kernels of this folder (included by each .c). */
#ifndef WAI_BF16_H
#define WAI_BF16_H

#include <stdint.h>
#include <string.h>

static inline float load_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t store_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float load_f32(float x) { return x; }
static inline float store_f32(float x) { return x; }

#endif
