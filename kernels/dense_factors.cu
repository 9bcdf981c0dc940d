// ElementwiseKernel operation for the dense path: factor i of rows (H, K) then cols (K, W), the rank-K
// product rows @ cols being the sum of N axis-aligned kernels (size = K * (H + W)).
// in_params: raw float64 params, raw int32 ibox, raw float64 count_sums, int64 n, int64 height, int64 width, int32 normalize
// out_params: raw T factors
factors[i] = gh_dense_factor<T>(i, n, height, width, &params[0], &ibox[0], normalize, &count_sums[0]);
