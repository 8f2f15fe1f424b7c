// contiguous, astype, to_device, zeros, take_rows, slice_last.
#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_close;
using optest::expect_error;
using optest::rand_f32;

TEST(Contiguous, CopiesStridedViews) {
  Tensor x = rand_f32({5, 7, 3}, 1);
  Tensor v = x.slice(1, 2, 6);  // [5, 4, 3], strided
  ASSERT_FALSE(v.is_contiguous());
  Tensor c = ops::contiguous(v);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.shape(), (Shape{5, 4, 3}));
  std::vector<float> want;
  auto xv = x.to_f32_vector();
  for (int i = 0; i < 5; ++i)
    for (int j = 2; j < 6; ++j)
      for (int k = 0; k < 3; ++k) want.push_back(xv[size_t((i * 7 + j) * 3 + k)]);
  expect_close(c, want, 0, 0);
  // Strided last dimension too.
  Tensor y = rand_f32({6, 9}, 2);
  Tensor yv = y.slice(0, 1, 5);
  EXPECT_EQ(ops::contiguous(yv).to_f32_vector(), yv.clone().to_f32_vector());
  // Contiguous input comes back as is.
  EXPECT_EQ(ops::contiguous(x).raw(), x.raw());
}

TEST(Astype, RoundTripsAndRounds) {
  std::vector<float> vals = {1.0f, -2.5f, 3.14159265f, 65504.0f, 1e-8f, -0.0f, 1.00390625f};
  Tensor x = Tensor::from_f32({7}, vals);
  for (DType dt : {DType::f16, DType::bf16}) {
    Tensor h = ops::astype(x, dt);
    EXPECT_EQ(h.dtype(), dt);
    expect_close(ops::astype(h, DType::f32), optest::round_to(vals, dt), 0, 0, dtype_name(dt));
  }
  // f16 -> bf16 goes through f32.
  Tensor hb = ops::astype(ops::astype(x, DType::f16), DType::bf16);
  expect_close(hb, optest::round_to(optest::round_to(vals, DType::f16), DType::bf16), 0, 0);
  Tensor i = Tensor::from_i32({3}, {-7, 0, 123456});
  expect_close(ops::astype(i, DType::f32), {-7.0f, 0.0f, 123456.0f}, 0, 0);
  // Same dtype: a new contiguous copy.
  Tensor same = ops::astype(x.slice(0, 1, 4), DType::f32);
  EXPECT_NE(same.raw(), x.raw());
  expect_close(same, {-2.5f, 3.14159265f, 65504.0f}, 0, 0);
  expect_error([&] { ops::astype(x, DType::i32); }, ErrorKind::invalid_request, "[astype]");
  expect_error([&] { ops::astype(i, DType::f16); }, ErrorKind::invalid_request, "[astype]");
}

TEST(ToDevice, CpuCopyAndCudaUnsupported) {
  Tensor x = rand_f32({3, 4}, 3);
  Tensor y = ops::to_device(x, Device::cpu());
  EXPECT_NE(y.raw(), x.raw());
  EXPECT_EQ(y.to_f32_vector(), x.to_f32_vector());
#ifndef MLXCEL_WITH_CUDA  // with the CUDA backend built these succeed (tests/gpu checks them)
  expect_error([&] { ops::to_device(x, Device::cuda()); }, ErrorKind::unsupported, "[to_device]");
#endif
}

TEST(Zeros, IsZero) {
  Tensor z = ops::zeros({4, 5}, DType::bf16, Device::cpu());
  EXPECT_EQ(z.dtype(), DType::bf16);
  for (float v : z.to_f32_vector()) EXPECT_EQ(v, 0.0f);
#ifndef MLXCEL_WITH_CUDA
  expect_error([&] { ops::zeros({2}, DType::f32, Device::cuda()); }, ErrorKind::unsupported,
               "[zeros] has no CUDA implementation");
#endif
}

TEST(TakeRows, PicksRowsAndChecksIds) {
  Tensor x = rand_f32({10, 13}, 4);
  Tensor idx = Tensor::from_i32({4}, {9, 0, 3, 3});
  Tensor y = ops::take_rows(x, idx);
  EXPECT_EQ(y.shape(), (Shape{4, 13}));
  auto xv = x.to_f32_vector();
  std::vector<float> want;
  for (int r : {9, 0, 3, 3})
    for (int k = 0; k < 13; ++k) want.push_back(xv[size_t(r * 13 + k)]);
  expect_close(y, want, 0, 0);
  // Works for any dtype (bf16 rows stay bf16).
  Tensor xb = ops::astype(x, DType::bf16);
  Tensor yb = ops::take_rows(xb, idx);
  EXPECT_EQ(yb.dtype(), DType::bf16);
  expect_close(yb, optest::round_to(want, DType::bf16), 0, 0);
  expect_error([&] { ops::take_rows(x, Tensor::from_i32({1}, {10})); }, ErrorKind::invalid_request, "[take_rows]");
  expect_error([&] { ops::take_rows(x, Tensor::from_i32({1}, {-1})); }, ErrorKind::invalid_request, "[take_rows]");
  expect_error([&] { ops::take_rows(x, Tensor::from_f32({1}, {0.0f})); }, ErrorKind::invalid_request, "[take_rows]");
}

TEST(SliceLast, CopiesColumns) {
  Tensor x = rand_f32({2, 3, 11}, 5);
  Tensor y = ops::slice_last(x, 4, 9);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  auto xv = x.to_f32_vector();
  std::vector<float> want;
  for (int r = 0; r < 6; ++r)
    for (int k = 4; k < 9; ++k) want.push_back(xv[size_t(r * 11 + k)]);
  expect_close(y, want, 0, 0);
  EXPECT_EQ(ops::slice_last(x, 3, 3).shape(), (Shape{2, 3, 0}));
  expect_error([&] { ops::slice_last(x, 5, 12); }, ErrorKind::invalid_request, "[slice_last]");
  expect_error([&] { ops::slice_last(x, 5, 4); }, ErrorKind::invalid_request, "[slice_last]");
}

// A queued copy to the host (decode loops read a step's token ids with it): wait() gives
// the tensor as it was at start(), later writes to the source do not show.
TEST(Readback, CopiesAtStart) {
  std::unique_ptr<ops::Readback> rb = ops::make_readback(Device::cpu(), 16);
  Tensor ids = Tensor::from_i32({3}, {7, -1, 42});
  rb->start(ids);
  ids.data<int32_t>()[0] = 9;
  Tensor got = rb->wait();
  EXPECT_EQ(got.shape(), (Shape{3}));
  EXPECT_EQ(got.dtype(), DType::i32);
  EXPECT_EQ(got.data<int32_t>()[0], 7);
  EXPECT_EQ(got.data<int32_t>()[2], 42);
  rb->start(ids);
  EXPECT_EQ(rb->wait().data<int32_t>()[0], 9);
  expect_error([&] { ops::make_readback(Device::cpu(), -1); }, ErrorKind::invalid_request, "[readback]");
  expect_error([&] { rb->start(Tensor::from_i32({5}, {1, 2, 3, 4, 5})); }, ErrorKind::invalid_request, "[readback]");
}

}  // namespace
}  // namespace mlxcel
