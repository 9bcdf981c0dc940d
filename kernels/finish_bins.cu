// ElementwiseKernel operation: one thread per entry i of the tile list in sorted order (order: a
// stable argsort of keys) writes its kernel id and the CSR offsets of the tiles that start there.
// in_params: raw int64 order, raw int32 keys, raw int32 ids, int64 n_entries, int64 n_tiles
// out_params: raw int32 kernel_ids, raw int32 offsets
gh_finish_bins(i, n_entries, n_tiles, &order[0], &keys[0], &ids[0], &kernel_ids[0], &offsets[0]);
