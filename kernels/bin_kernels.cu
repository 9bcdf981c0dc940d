// ElementwiseKernel operation: one thread per kernel i writes (tile key, kernel id) for every tile its
// box meets, from its exclusive prefix of tile counts; in count mode it also finishes rotated kernels'
// normalisers from their count lanes.
// in_params: raw int64 ends, raw int64 tiles, raw int32 ibox, int64 tile_rows, int64 tile_cols, raw float64 lanes, int32 count_mode, raw float64 params
// out_params: raw int32 keys, raw int32 ids, raw float32 fast, raw float64 count_sums
gh_bin_kernel(i, ends[i] - tiles[i], &ibox[0], tile_rows, tile_cols, &keys[0], &ids[0], &lanes[0], count_mode, &params[0], &fast[0], &count_sums[0]);
