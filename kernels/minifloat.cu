// Minifloat casts (FP16, BF16, FP8 E4M3FN/E5M2, FP6, FP4): the GPU twins of qtutor/formats/minifloat.py.
//
// One generic kernel per direction, parameterised by exponent bits E, mantissa bits M and the meaning of the
// all-ones exponent (special: 0 IEEE inf/NaN, 1 "FN" (only s.1..1.1..1 is NaN), 2 none). Codes are stored as
// uint16 (the Python side narrows them to uint8 for formats of 8 bits or fewer).
//
// Bit-exactness: the NumPy twin rounds in float64, where every step is exact (a float32 magnitude divided by a
// power-of-two spacing, rint, and multiplied back), so the same double-precision steps here give the same codes.
// Hopper and Ada have hardware FP8 converters (cvt.rn.satfinite.e4m3x2.f32); this generic kernel is the readable
// one, for every format including FP6/FP4, which have no converter before Blackwell.

struct MinifloatSpec {
    int E, M, special, bits, bias, min_exponent;
    double max_normal;
    unsigned int sign_bit, nan_code, inf_code;
};

__device__ MinifloatSpec make_spec(int E, int M, int special) {
    MinifloatSpec f;
    f.E = E;
    f.M = M;
    f.special = special;
    f.bits = 1 + E + M;
    f.bias = (1 << (E - 1)) - 1;
    f.min_exponent = 1 - f.bias;
    int top_exponent = (1 << E) - (special == 0 ? 2 : 1) - f.bias;
    int top_mantissa = (1 << M) - (special == 1 ? 2 : 1);
    f.max_normal = ldexp(1.0 + (double)top_mantissa / (double)(1 << M), top_exponent);
    f.sign_bit = 1u << (f.bits - 1);
    f.nan_code = special == 0 ? ((((1u << E) - 1u) << M) | (1u << (M - 1))) : (special == 1 ? f.sign_bit - 1u : 0u);
    f.inf_code = ((1u << E) - 1u) << M;
    return f;
}

// Bit pattern of a non-negative, exactly representable value (the twin's _code_of_value).
__device__ unsigned int code_of_value(double value, const MinifloatSpec& f) {
    if (value == 0.0) return 0u;
    int exponent;
    frexp(value, &exponent);
    int binade = exponent - 1;
    if (binade >= f.min_exponent) {
        double significand = ldexp(value, -binade) - 1.0;
        unsigned int mantissa = (unsigned int)rint(ldexp(significand, f.M));
        return ((unsigned int)(binade + f.bias) << f.M) | mantissa;
    }
    return (unsigned int)rint(ldexp(value, f.M - f.min_exponent));  // subnormal: value / 2^(min_exponent - M)
}

// twin: qtutor.formats.minifloat.Minifloat.cast
// Round to nearest, ties to even; saturate != 0 clamps overflow (and infinities) to +-max_normal.
extern "C" __global__ void minifloat_cast(const float* __restrict__ x, long long n, int E, int M, int special,
                                          int saturate, unsigned short* __restrict__ codes) {
    MinifloatSpec f = make_spec(E, M, special);
    if (special == 2) saturate = 1;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float value = x[i];
        unsigned int sign = signbit(value) ? f.sign_bit : 0u;
        unsigned int code;
        if (isnan(value)) {
            code = f.nan_code;  // formats without NaN are refused on the Python side before launch
        } else if (isinf(value)) {
            code = saturate ? code_of_value(f.max_normal, f) : (special == 0 ? f.inf_code : f.nan_code);
        } else {
            double magnitude = fabs((double)value);
            int exponent;
            frexp(magnitude, &exponent);
            int binade = max(exponent - 1, f.min_exponent);
            double spacing = ldexp(1.0, binade - f.M);
            double rounded = rint(magnitude / spacing) * spacing;
            if (rounded > f.max_normal) {
                code = saturate ? code_of_value(f.max_normal, f) : (special == 0 ? f.inf_code : f.nan_code);
            } else {
                code = code_of_value(rounded, f);
            }
        }
        codes[i] = (unsigned short)(code | sign);
    }
}

// twin: qtutor.formats.minifloat.Minifloat.values
// value = (-1)^s 2^(e - bias) (1 + m / 2^M) for normals, 2^(1 - bias) m / 2^M for subnormals; specials per format.
extern "C" __global__ void minifloat_decode(const unsigned short* __restrict__ codes, long long n, int E, int M,
                                            int special, float* __restrict__ out) {
    MinifloatSpec f = make_spec(E, M, special);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned int code = codes[i];
        double sign = (code & f.sign_bit) ? -1.0 : 1.0;
        int exponent = (code >> M) & ((1 << E) - 1);
        int mantissa = code & ((1 << M) - 1);
        double fraction = (double)mantissa / (double)(1 << M);
        double value = exponent == 0 ? ldexp(fraction, f.min_exponent) : ldexp(1.0 + fraction, exponent - f.bias);
        bool top = exponent == (1 << E) - 1;
        if (special == 0 && top) value = mantissa == 0 ? INFINITY : NAN;
        if (special == 1 && top && mantissa == (1 << M) - 1) value = NAN;
        out[i] = (float)(sign * value);
    }
}
