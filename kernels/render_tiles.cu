// ElementwiseKernel operation: one thread per pixel of every 16x16 tile (size = tiles * 256, blocks of
// 256: a block is a tile), walking the tile's kernel list. T is the output dtype; the preamble fixes
// GH_COMBINE, GH_NORMALIZE and GH_EVAL64 (gaussheat_gpu.cuda_sources.render_defines).
// in_params: raw int32 offsets, raw int32 kernel_ids, raw int32 ibox, raw float32 fast, raw float64 params, raw float64 count_sums, int32 tile_rows, int32 tile_cols, int32 height, int32 width, int32 accumulate
// out_params: raw T out
int tile, image, row, col;
if (!gh_tile_pixel(i, tile_rows, tile_cols, height, width, &tile, &image, &row, &col)) continue;
const long long at = ((long long)image * height + row) * width + col;
out[at] = gh_render_pixel<T, GH_COMBINE, GH_NORMALIZE, GH_EVAL64>(accumulate ? out[at] : T(0), tile, row, col, &offsets[0], &kernel_ids[0], &ibox[0], &fast[0], &params[0], &count_sums[0]);
