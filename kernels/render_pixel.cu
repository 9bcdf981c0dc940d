// ElementwiseKernel operation: one thread per output pixel `out` (flat index i into the C-contiguous
// output), walking the CSR kernel list of the pixel's tile; T is the output dtype (float or double).
// The two signature lines below are what gaussheat_gpu.cuda_sources hands to cupy.ElementwiseKernel.
// in_params: raw float64 params, raw int64 boxes, raw int64 tile_offsets, raw int64 kernel_ids, raw float64 count_sums, int64 height, int64 width, int64 tile_height, int64 tile_width, int32 combine, int32 normalize, int32 accumulate
// out_params: T out
out = gh_render_pixel<T>(i, accumulate ? out : T(0), &params[0], &boxes[0], &tile_offsets[0], &kernel_ids[0],
                         &count_sums[0], height, width, tile_height, tile_width, combine, normalize);
