"""Box crops, checked against an independent float64 NumPy bilinear resize and against finite differences, in both
formulations (ops.crops.RESAMPLE, the `resample` fixture), and the two formulations against each other."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from bilinear_reference import reference_crop, smooth_image

from fgattn_jax.ops import crops, racnn
from fgattn_jax.ops.crops import crop_parts, crop_resize, square_boxes

# Compiled whole: op-by-op dispatch compiles every primitive separately, seconds per test on a busy CPU.
_crop = jax.jit(crop_resize, static_argnums=2)


@pytest.mark.parametrize(
  "box, out_hw",
  [
    ((2.0, 3.0, 10.0, 9.0), (6, 8)),  # inside, integer corners, non-square
    ((1.3, 0.7, 6.9, 4.2), (9, 13)),  # sub-pixel corners, upsampling
    ((0.25, 0.5, 15.6, 11.8), (5, 4)),  # nearly the whole image, downsampling
    ((-3.5, -2.2, 6.1, 5.4), (7, 7)),  # partly outside the top-left: zeros
    ((9.7, 6.3, 19.4, 15.1), (6, 10)),  # partly outside the bottom-right
    ((-8.0, -8.0, -1.0, -2.0), (3, 3)),  # entirely outside
  ],
)
@pytest.mark.usefixtures("resample")
def test_crop_matches_reference(box, out_hw):
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (12, 16, 3)).astype(np.float32)
  crop = _crop(image[None], np.array([box], np.float32), out_hw)
  assert crop.shape == (1, *out_hw, 3) and crop.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(crop[0]), reference_crop(image, box, out_hw), atol=1e-5)


@pytest.mark.usefixtures("resample")
def test_whole_image_at_full_size_is_identity():
  image = np.random.default_rng(2).normal(size=(2, 7, 10, 3)).astype(np.float32)
  boxes = np.tile(np.array([[0.0, 0.0, 10.0, 7.0]], np.float32), (2, 1))
  np.testing.assert_allclose(np.asarray(_crop(image, boxes, (7, 10))), image, atol=1e-6)


@pytest.mark.usefixtures("resample")
def test_integer_aligned_halving_is_block_mean():
  image = np.random.default_rng(3).normal(size=(1, 12, 16, 2)).astype(np.float32)
  blocks = image.reshape(1, 6, 2, 8, 2, 2).mean(axis=(2, 4))
  whole = _crop(image, np.array([[0.0, 0.0, 16.0, 12.0]], np.float32), (6, 8))
  np.testing.assert_allclose(np.asarray(whole), blocks, atol=1e-6)
  part = _crop(image, np.array([[2.0, 4.0, 10.0, 12.0]], np.float32), (4, 4))
  np.testing.assert_allclose(
    np.asarray(part), image[:, 4:12, 2:10].reshape(1, 4, 2, 4, 2, 2).mean(axis=(2, 4)), atol=1e-6
  )


@pytest.mark.usefixtures("resample")
def test_uint8_images_become_float32():
  image = np.random.default_rng(4).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
  crop = _crop(image, np.array([[1.2, 0.4, 7.5, 6.1]]), (5, 5))
  assert crop.dtype == jnp.float32
  np.testing.assert_allclose(
    np.asarray(crop[0]), reference_crop(image[0], (1.2, 0.4, 7.5, 6.1), (5, 5)), rtol=1e-5, atol=1e-4
  )


@pytest.mark.usefixtures("resample")
def test_box_gradient_matches_finite_differences(x64):
  image = jnp.asarray(smooth_image(14, 18, 2)[None])
  weights = jnp.asarray(np.random.default_rng(5).normal(size=(1, 6, 7, 2)))
  # Some corners outside the image, so the zero extension's slope is checked too.
  box = np.array([-1.37, 2.21, 12.63, 15.42])

  @jax.jit
  def loss(box):
    return jnp.sum(_crop(image, box[None], (6, 7)) * weights)

  grad = np.asarray(jax.grad(loss)(jnp.asarray(box)))
  eps = 1e-6
  numeric = np.array(
    [(loss(jnp.asarray(box + eps * e)) - loss(jnp.asarray(box - eps * e))) / (2 * eps) for e in np.eye(4)]
  )
  assert np.all(np.abs(numeric) > 1e-3)  # the check is not vacuous
  np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.usefixtures("resample")
def test_image_gradient_matches_finite_differences(x64):
  image = jnp.asarray(smooth_image(6, 7, 1, seed=6)[None])
  box = jnp.asarray([[0.6, -0.8, 5.9, 4.3]])
  jax.test_util.check_grads(lambda im: _crop(im, box, (4, 5)), (image,), order=1, modes=["rev"])


@pytest.mark.usefixtures("resample")
def test_moving_the_box_towards_a_bright_half_increases_brightness():
  # Bright on the right half (columns 8..15); the box straddles the edge and stays inside all pixel centres.
  image = np.zeros((1, 16, 16, 1), np.float32)
  image[:, :, 8:] = 1.0

  def brightness(box):
    return jnp.mean(_crop(image, box[None], (12, 12)))

  grad = np.asarray(jax.grad(brightness)(jnp.asarray([3.3, 2.1, 12.7, 13.4])))
  assert grad[0] > 0 and grad[2] > 0
  np.testing.assert_allclose(grad[[1, 3]], 0.0, atol=1e-7)  # constant along y


def test_square_boxes_shift_inside_each_border():
  image_hw = (20, 30)  # (H, W)
  centers = np.array([[[2.0, 10.0], [29.0, 10.0], [15.0, 1.0], [15.0, 19.5], [15.0, 10.0], [0.0, 0.0]]])
  boxes = np.asarray(square_boxes(centers, 5.0, image_hw))
  assert boxes.shape == (1, 6, 4)
  np.testing.assert_allclose(
    boxes[0],
    [
      [0, 5, 10, 15],  # left border
      [20, 5, 30, 15],  # right border
      [10, 0, 20, 10],  # top border
      [10, 10, 20, 20],  # bottom border
      [10, 5, 20, 15],  # interior: untouched
      [0, 0, 10, 10],  # corner: both axes
    ],
  )
  np.testing.assert_allclose(
    np.asarray(square_boxes(centers, 5.0, image_hw, keep_inside=False))[0],
    np.concatenate([centers[0] - 5, centers[0] + 5], axis=-1),
  )


def test_square_boxes_per_box_sizes_and_too_large():
  centers = np.array([[[3.0, 3.0], [25.0, 18.0]], [[12.0, 2.0], [29.0, 10.0]]])
  half = np.array([[2.0, 4.0], [12.0, 6.0]])
  boxes = np.asarray(square_boxes(centers, half, (20, 30)))
  assert boxes.shape == (2, 2, 4)
  np.testing.assert_allclose(boxes[..., 2] - boxes[..., 0], 2 * half)  # shifted, never shrunk
  np.testing.assert_allclose(boxes[..., 3] - boxes[..., 1], 2 * half)
  np.testing.assert_allclose(boxes[0, 1], [21, 12, 29, 20])
  # 24 pixels wide fits the 30-pixel width (shifted right of 0) but not the 20-pixel height (centred, overhanging).
  np.testing.assert_allclose(boxes[1, 0], [0, -2, 24, 22])


@pytest.mark.usefixtures("resample")
def test_crop_parts_matches_per_box_crops_under_jit():
  rng = np.random.default_rng(7)
  images = rng.uniform(0, 1, (2, 12, 16, 3)).astype(np.float32)
  corners = rng.uniform(-2, 14, (2, 3, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(2, 9, (2, 3, 2))], axis=-1).astype(np.float32)
  parts_fn = jax.jit(crop_parts, static_argnums=2)
  parts = parts_fn(images, boxes, (5, 6))
  assert parts.shape == (2, 3, 5, 6, 3)
  for n in range(3):
    np.testing.assert_allclose(np.asarray(parts[:, n]), np.asarray(_crop(images, boxes[:, n], (5, 6))), atol=1e-6)
    for b in range(2):  # and the (image, box) pairing is right, not just self-consistent
      np.testing.assert_allclose(np.asarray(parts[b, n]), reference_crop(images[b], boxes[b, n], (5, 6)), atol=1e-5)

  low = parts_fn(jnp.asarray(images, jnp.bfloat16), boxes, (5, 6))
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(parts), atol=2e-2)


def test_gather_and_matmul_agree_with_their_gradients(x64):
  """The two formulations are one function: values and gradients (to the images and to the boxes, both crops, the
  box mask folded into the matrices for RA-CNN's) equal to float64 rounding; boxes partly outside included."""
  rng = np.random.default_rng(8)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 12, 16, 3)))
  corners = rng.uniform(-3, 12, (2, 3, 2))
  boxes = jnp.asarray(np.concatenate([corners, corners + rng.uniform(3, 10, (2, 3, 2))], axis=-1))
  weights = jnp.asarray(rng.normal(size=(2, 3, 5, 6, 3)))

  def parts_loss(images, boxes):
    return jnp.sum(crops.crop_parts(images, boxes, (5, 6)) * weights)

  def zoom_loss(images, boxes):
    return jnp.sum(racnn.attention_crop(images, boxes[:, 0], (5, 6), k=10.0) * weights[:, 0])

  def both(mode, default=crops.RESAMPLE):
    crops.RESAMPLE = mode
    try:  # traced afresh per mode: the switch is read at trace time
      return [
        jax.tree.leaves(jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(images, boxes))
        for fn in (parts_loss, zoom_loss)
      ]
    finally:
      crops.RESAMPLE = default

  for gathered, multiplied in zip(both("gather"), both("matmul")):
    for a, b in zip(gathered, multiplied):
      assert np.abs(np.asarray(a)).max() > 1e-3  # not vacuous: every value and gradient is non-zero somewhere
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
