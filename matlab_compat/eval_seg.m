function [miou, iou, conf, pixacc, miou_deeplab] = eval_seg(pred_dir, gt_dir, list_file, num_classes, ignore_label)
% EVAL_SEG  Mean IoU of saved predictions against ground truth, as DeepLab's
% EvalSegResults.m / MyVOCevalseg.m did.
%   [miou, iou, conf, pixacc, miou_deeplab] = eval_seg(pred_dir, gt_dir, list_file, num_classes)
%
% For every id of list_file (see read_list_ids):
%   - the ground truth is gt_dir/<id>.png (class ids; palette PNGs give their indices);
%   - the prediction is pred_dir/<id>.png (class ids, e.g. a CRF result), or else the
%     MatWrite features pred_dir/<id>_blob_0.mat: cropped at the top-left to the image
%     size, then the arg-max over the classes (ties go to the lowest class);
%   - pixels whose ground truth is ignore_label (default 255) are skipped.
% conf(g+1, p+1) counts pixels of true class g predicted as p.  iou(c) =
% conf(c,c) / (row_c + col_c - conf(c,c)), NaN for a class in neither the ground truth
% nor the predictions; miou is the mean over the defined classes (deeplab-eval's
% "mIOU").  miou_deeplab is MyVOCevalseg.m's mean (deeplab-eval's "mIOU (DeepLab)"):
% a zero union is taken as 1, so an absent class counts 0, and the sum is divided by
% num_classes; the two agree when every class is present.  pixacc is
% trace(conf) / sum(conf).
  if nargin < 5, ignore_label = 255; end
  ids = read_list_ids(list_file);
  conf = zeros(num_classes, num_classes);
  for k = 1:numel(ids)
    id = ids{k};
    gt = double(imread(fullfile(gt_dir, [id '.png'])));
    gt = gt(:, :, 1);
    [h, w] = size(gt);
    png = fullfile(pred_dir, [id '.png']);
    if exist(png, 'file')
      pred = double(imread(png));
      pred = pred(:, :, 1);
    else
      scores = read_matwrite(fullfile(pred_dir, [id '_blob_0.mat']), h, w);
      [~, idx] = max(scores, [], 3);             % first maximum: the lowest class
      pred = idx - 1;
    end
    if ~isequal(size(pred), [h w])
      error('eval_seg:size', '%s: prediction %dx%d, ground truth %dx%d', id, size(pred, 1), ...
            size(pred, 2), h, w);
    end
    keep = gt ~= ignore_label;
    g = gt(keep); p = pred(keep);
    if any(g < 0 | g >= num_classes) || any(p < 0 | p >= num_classes)
      error('eval_seg:range', '%s: labels outside 0..%d', id, num_classes - 1);
    end
    conf = conf + accumarray([g(:) + 1, p(:) + 1], 1, [num_classes num_classes]);
  end
  tp = diag(conf);
  union = sum(conf, 2) + sum(conf, 1)' - tp;
  iou = nan(num_classes, 1);
  iou(union > 0) = tp(union > 0) ./ union(union > 0);
  miou = mean(iou(~isnan(iou)));
  denom = union;
  denom(denom == 0) = 1;
  miou_deeplab = sum(tp ./ denom) / num_classes;
  pixacc = sum(tp) / sum(conf(:));
end
