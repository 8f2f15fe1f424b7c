#include "tensor/tensor.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace mlxcel {

TEST(Tensor, EmptyHasContiguousStrides) {
  Tensor t = Tensor::empty({2, 3, 4}, DType::bf16);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.describe(), "bf16[2, 3, 4] cpu");
}

TEST(Tensor, SliceAndSelectAreViews) {
  Tensor t = Tensor::from_f32({3, 2}, {0, 1, 2, 3, 4, 5});
  Tensor r = t.slice(0, 1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 2}));
  EXPECT_EQ(r.data<float>()[0], 2.0f);
  r.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  Tensor c = t.slice(1, 1, 2);
  EXPECT_FALSE(c.is_contiguous());
  EXPECT_EQ(c.to_f32_vector(), (std::vector<float>{1, 3, 5}));
  EXPECT_EQ(t.select(2).to_f32_vector(), (std::vector<float>{4, 5}));
}

TEST(Tensor, AdjacentRowsJoinOnlyEndToEndViewsOfOneStorage) {
  Tensor all = Tensor::empty({10, 4}, DType::f32);
  const Tensor a = all.slice(0, 0, 6), b = all.slice(0, 6, 8), c = all.slice(0, 8, 10);
  Tensor j = Tensor::adjacent_rows({a, b, c});
  ASSERT_TRUE(j.defined());
  EXPECT_EQ(j.shape(), (Shape{10, 4}));
  EXPECT_EQ(j.raw(), all.raw());
  EXPECT_EQ(Tensor::adjacent_rows({b, c}).raw(), b.raw());
  EXPECT_FALSE(Tensor::adjacent_rows({a, c}).defined());                        // a gap
  EXPECT_FALSE(Tensor::adjacent_rows({b, a}).defined());                        // out of order
  EXPECT_FALSE(Tensor::adjacent_rows({a, Tensor::empty({2, 4}, DType::f32)}).defined());  // another storage
  EXPECT_FALSE(Tensor::adjacent_rows({a, b, Tensor()}).defined());
  Tensor wide = Tensor::empty({4, 8}, DType::f32);
  EXPECT_FALSE(Tensor::adjacent_rows({wide.slice(1, 0, 4), wide.slice(1, 4, 8)}).defined());  // strided
  EXPECT_FALSE(Tensor::adjacent_rows({all.slice(0, 0, 1), all.slice(0, 1, 2).reshape({2, 2})}).defined());  // shapes
  EXPECT_TRUE(Tensor::adjacent_rows({a}).defined());
  EXPECT_FALSE(Tensor::adjacent_rows({}).defined());
}

TEST(Tensor, ReshapeChecks) {
  Tensor t = Tensor::empty({4, 6}, DType::f32);
  EXPECT_EQ(t.reshape({2, -1, 3}).shape(), (Shape{2, 4, 3}));
  EXPECT_THROW(t.reshape({5, 5}), Error);
  EXPECT_THROW(t.slice(1, 0, 3).reshape({12}), Error);
  EXPECT_THROW(t.slice(0, 2, 9), Error);
  EXPECT_THROW(Tensor::empty({-1}, DType::f32), Error);
}

TEST(DType, ParsesSafetensorsNames) {
  EXPECT_EQ(parse_dtype("BF16"), DType::bf16);
  EXPECT_EQ(parse_dtype("U32"), DType::u32);
  EXPECT_THROW(parse_dtype("F8_E4M3"), Error);
}

}  // namespace mlxcel
