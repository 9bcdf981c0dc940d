// ElementwiseKernel operation: planning on the device, one thread per caller's kernel i (size = N).
// Compiled with --fmad=false: coefficients and boxes are the host plan's bits (planning.py).
// truncate: one radius per kernel (per_kernel_truncate), else truncate_value for all.
// trig_given: cos_t / sin_t hold cos and sin of theta (computed by the host), else cos_t holds theta.
// in_params: raw float64 x, raw float64 y, raw float64 sigma_x, raw float64 sigma_y, raw float64 cos_t, raw float64 sin_t, raw float64 amplitude, raw int64 image, raw float64 truncate, int32 per_kernel_truncate, float64 truncate_value, int32 trig_given, float64 x0, float64 dx, float64 y0, float64 dy, int64 height, int64 width, int64 n_images, int64 tile_rows, int64 tile_cols, int32 combine, int32 normalize
// out_params: raw float64 params, raw float32 fast, raw int32 ibox, raw int64 tiles, raw int64 summary, raw float64 count_sums
// options: --fmad=false
const GhGrid grid = {x0, dx, y0, dy, height, width, n_images, tile_rows, tile_cols, combine, normalize};
const double theta_cos = trig_given ? cos_t[i] : cos(cos_t[i]), theta_sin = trig_given ? sin_t[i] : sin(cos_t[i]);
gh_plan_kernel(i, _ind.size(), x[i], y[i], sigma_x[i], sigma_y[i], theta_cos, theta_sin, amplitude[i], image[i], per_kernel_truncate ? truncate[i] : truncate_value, grid, &params[0], &fast[0], &ibox[0], &tiles[0], &summary[0], &count_sums[0]);
