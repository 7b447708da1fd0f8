function n = crf_to_png(in_dir, out_dir, list_file, image_dir)
% CRF_TO_PNG  Turn CRF outputs saved as MatWrite files (deeplab-crf --save-probs writes
% <out>/probs/<id>_blob_0.mat; DeepLab's own CRF results converted to .mat read the same)
% into VOC palette PNGs <out_dir>/<id>.png, the format of the evaluation server.
%   n = crf_to_png(in_dir, out_dir)                       every *_blob_0.mat in in_dir
%   n = crf_to_png(in_dir, out_dir, list_file, image_dir) the list's ids, each cropped
%                                                         to its image in image_dir
% Returns the number of PNGs written.
  if nargin >= 3 && ~isempty(list_file)
    ids = read_list_ids(list_file);
  else
    files = dir(fullfile(in_dir, '*_blob_0.mat'));
    ids = cellfun(@(f) f(1:end - numel('_blob_0.mat')), {files.name}, 'UniformOutput', false);
  end
  if ~exist(out_dir, 'dir'), mkdir(out_dir); end
  cmap = voc_colormap(256);
  for k = 1:numel(ids)
    id = ids{k};
    path = fullfile(in_dir, [id '_blob_0.mat']);
    if nargin >= 4 && ~isempty(image_dir)
      info = imfinfo(fullfile(image_dir, [id '.jpg']));
      scores = read_matwrite(path, info.Height, info.Width);
    else
      scores = read_matwrite(path);
    end
    [~, idx] = max(scores, [], 3);
    imwrite(uint8(idx - 1), cmap, fullfile(out_dir, [id '.png']));
  end
  n = numel(ids);
end
