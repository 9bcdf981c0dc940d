// ElementwiseKernel operation for normalize="count" with rotated kernels: GH_COUNT_LANES threads per
// kernel, lane i % GH_COUNT_LANES of kernel i / GH_COUNT_LANES summing its share of the box (float64).
// in_params: raw float64 params, raw int32 ibox
// out_params: float64 lanes
lanes = gh_count_lane(&params[0], &ibox[0], i / GH_COUNT_LANES, int(i % GH_COUNT_LANES));
