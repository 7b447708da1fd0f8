function cmap = voc_colormap(n)
% VOC_COLORMAP  PASCAL VOC's label colour map (VOCdevkit's labelcolormap: the bits of
% the class index spread over R, G and B), as an n x 3 matrix in [0, 1].
  if nargin < 1, n = 256; end
  cmap = zeros(n, 3);
  for i = 1:n
    id = i - 1; r = 0; g = 0; b = 0;
    for j = 0:7
      r = bitor(r, bitshift(double(bitget(id, 1)), 7 - j));
      g = bitor(g, bitshift(double(bitget(id, 2)), 7 - j));
      b = bitor(b, bitshift(double(bitget(id, 3)), 7 - j));
      id = bitshift(id, -3);
    end
    cmap(i, :) = [r g b];
  end
  cmap = cmap / 255;
end
