function ids = read_list_ids(list_file)
% READ_LIST_IDS  Image ids of a DeepLab list: an id a line (val_id.txt) or
% '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png' lines; the id is the base name
% of the first field.  Blank lines and lines starting with '#' are skipped.
  fid = fopen(list_file, 'r');
  if fid < 0
    error('read_list_ids:open', 'cannot open list %s', list_file);
  end
  ids = {};
  line = fgetl(fid);
  while ischar(line)
    t = strtrim(line);
    if ~isempty(t) && t(1) ~= '#'
      first = strtok(t);
      [~, name] = fileparts(first);
      ids{end + 1} = name; %#ok<AGROW>
    end
    line = fgetl(fid);
  end
  fclose(fid);
end
