function scores = read_matwrite(path, height, width)
% READ_MATWRITE  Read a MatWrite feature file (<id>_blob_0.mat) as H x W x C scores.
%   scores = read_matwrite(path)                 whole blob (the padded crop)
%   scores = read_matwrite(path, height, width)  cropped at the top-left to the image
%
% DeepLab's MatWrite (and deeplab-test) store one variable, 'data', single precision
% with dimensions [W, H, C, N] (Caffe's N x C x H x W memory read column-major).
% N must be 1.  Works in MATLAB and GNU Octave.
  s = load(path);
  if ~isfield(s, 'data')
    error('read_matwrite:novar', '%s: no variable ''data''', path);
  end
  d = s.data;
  if size(d, 4) ~= 1
    error('read_matwrite:batch', '%s: expected one image (N = 1), got %d', path, size(d, 4));
  end
  scores = permute(d, [2 1 3]);                  % [W H C] -> [H W C]
  if nargin >= 3
    if size(scores, 1) < height || size(scores, 2) < width
      error('read_matwrite:size', '%s: features %dx%d are smaller than the %dx%d image', ...
            path, size(scores, 1), size(scores, 2), height, width);
    end
    scores = scores(1:height, 1:width, :);
  end
end
