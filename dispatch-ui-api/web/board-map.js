/*
 * qzx operator board: the map. An SVG drawn from the api's jurisdictions,
 * coverage cells, units and incidents in an equirectangular projection (no
 * tile server: the pages run where no internet is). A click on an incident
 * selects it; `pick(cb)` hands the next click's position to a form (placing
 * an unlocated call).
 *
 * It must never change incidents or units, and never send a command.
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    map: ['态势图', 'Map'],
    cov_1: ['1分钟可达', '≤1 min'],
    cov_3: ['3分钟可达', '≤3 min'],
    cov_5: ['5分钟可达', '≤5 min'],
    cov_none: ['5分钟外', '>5 min'],
    incident: ['警情', 'incident'],
    pick_hint: ['在地图上点击选择位置', 'Click the map to choose the position'],
  });

  const M = {};
  B.map = M;

  const COV_FILL = { 1: 'rgba(47,179,68,.45)', 3: 'rgba(170,200,40,.30)', 5: 'rgba(240,140,0,.30)', 0: 'rgba(229,72,77,.24)' };
  const PRIO_FILL = { 1: '#e5484d', 2: '#f08c00', 3: '#e2c20e', 4: '#4c9aff' };

  let proj = null;
  let staticKey = null;
  let staticSvg = '';
  let cellRadiusM = 400;
  let cellsFor = -1; // the mapData the cell radius was computed for
  let picking = null; // callback of pick()

  function project(lat, lon) {
    return [proj.ox + (lon - proj.lon0) * proj.kx, proj.oy - (lat - proj.lat0) * proj.ky];
  }

  function unproject(x, y) {
    return [proj.lat0 + (proj.oy - y) / proj.ky, proj.lon0 + (x - proj.ox) / proj.kx];
  }

  function computeProjection(w, h) {
    const pts = [];
    for (const j of B.jurisdictions) for (const p of j.area) pts.push(p);
    if (!pts.length) {
      for (const u of B.units.values()) if (isFinite(u.lat) && isFinite(u.lon) && u.lat != null) pts.push([u.lat, u.lon]);
      for (const i of B.incidents.values()) if (i.location) pts.push([i.location.lat, i.location.lon]);
    }
    if (!pts.length) pts.push([36.634, 116.983], [36.686, 117.061]); // Jinan old town
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const [la, lo] of pts) {
      minLat = Math.min(minLat, la); maxLat = Math.max(maxLat, la);
      minLon = Math.min(minLon, lo); maxLon = Math.max(maxLon, lo);
    }
    const padLat = (maxLat - minLat) * 0.06 || 0.01;
    const padLon = (maxLon - minLon) * 0.06 || 0.01;
    minLat -= padLat; maxLat += padLat; minLon -= padLon; maxLon += padLon;
    const lat0 = (minLat + maxLat) / 2;
    const lon0 = (minLon + maxLon) / 2;
    const cos = Math.cos((lat0 * Math.PI) / 180);
    // One scale for both axes (in metres-ish), so shapes keep their form.
    const k = Math.min(w / ((maxLon - minLon) * cos), h / (maxLat - minLat));
    proj = { lat0, lon0, kx: k * cos, ky: k, ox: w / 2, oy: h / 2, w, h };
  }

  /** Half the median distance from a cell to its nearest neighbour (on a sample). */
  function cellRadius(cells) {
    const pts = cells.map((c) => c.centre);
    if (pts.length < 2) return 400;
    const step = Math.max(1, Math.floor(pts.length / 60));
    const nearest = [];
    for (let i = 0; i < pts.length; i += step) {
      let best = Infinity;
      for (let j = 0; j < pts.length; j++) {
        if (j !== i) best = Math.min(best, Q.haversineM(pts[i][0], pts[i][1], pts[j][0], pts[j][1]));
      }
      if (isFinite(best) && best > 0) nearest.push(best);
    }
    nearest.sort((a, b) => a - b);
    return nearest.length ? nearest[Math.floor(nearest.length / 2)] / 2 : 400;
  }

  function pointsAttr(ringPts) {
    return ringPts.map(([la, lo]) => project(la, lo).map((v) => v.toFixed(1)).join(',')).join(' ');
  }

  function renderStatic() {
    const parts = [];
    // Coverage cells as discs of half the distance to the nearest
    // neighbouring cell: discs of neighbours touch but never overlap,
    // whatever the grid's orientation, so no cell is drawn darker than
    // another.
    const cellR = Math.max(2, (cellRadiusM / 111320) * proj.ky);
    parts.push('<g id="m-cov">');
    for (const c of B.coverage) {
      const [x, y] = project(c.centre[0], c.centre[1]);
      parts.push('<circle cx="' + x.toFixed(1) + '" cy="' + y.toFixed(1) + '" r="' + cellR.toFixed(1) + '" fill="' + COV_FILL[c.level || 0] + '"/>');
    }
    parts.push('</g><g id="m-jur">');
    for (const j of B.jurisdictions) {
      if (j.area.length < 3) continue;
      parts.push('<polygon points="' + pointsAttr(j.area) + '" fill="none" stroke="#6f8cab" stroke-width="1.5" stroke-dasharray="5 3"/>');
      const c = j.centre || j.area.reduce((a, p) => [a[0] + p[0] / j.area.length, a[1] + p[1] / j.area.length], [0, 0]);
      const [x, y] = project(c[0], c[1]);
      parts.push('<text x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" fill="#9fb3c8" font-size="12" text-anchor="middle" opacity=".8">' +
        Q.esc(Q.lang === 'en' ? j.name_en : j.name) + '</text>');
    }
    parts.push('</g>');
    return parts.join('');
  }

  function shortUnit(u) {
    return u.id.length > 14 ? u.id.slice(-8) : u.id;
  }

  /** Redraws; `full` recomputes the projection (resize, language, new areas). */
  M.render = function (full) {
    const svg = $('map');
    const w = svg.clientWidth || 600;
    const h = svg.clientHeight || 400;
    if (cellsFor !== B.mapData) {
      cellsFor = B.mapData;
      cellRadiusM = cellRadius(B.coverage);
      full = true;
    }
    if (full || !proj || proj.w !== w || proj.h !== h) computeProjection(w, h);
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    // The cells and stations change every 10 s at most; units and incidents
    // with every push. Rebuild the first only when they or the view change.
    const key = [w, h, proj.lat0, proj.lon0, proj.ky, B.mapData, Q.lang].join('|');
    if (key !== staticKey) {
      staticKey = key;
      staticSvg = renderStatic();
    }
    const parts = [staticSvg];
    parts.push('<g id="m-inc">');
    for (const inc of B.sorted()) {
      if (!inc.location) continue;
      const [x, y] = project(inc.location.lat, inc.location.lon);
      const p = Q.prio(inc.priority);
      const sel = inc.id === B.selected;
      const r = sel ? 10 : 7;
      parts.push('<g class="m-incident" data-id="' + Q.esc(inc.id) + '" transform="translate(' + x.toFixed(1) + ',' + y.toFixed(1) + ')" style="cursor:pointer">' +
        '<rect x="' + -r + '" y="' + -r + '" width="' + 2 * r + '" height="' + 2 * r + '" transform="rotate(45)" fill="' + PRIO_FILL[p] +
        '" stroke="#fff" stroke-width="' + (sel ? 2.5 : 1) + '"' + (inc.hold ? ' stroke-dasharray="3 2"' : '') + '/>' +
        '<title>' + Q.esc(Q.kindName(inc.kind) + ' · ' + B.addr(inc)) + '</title></g>');
    }
    parts.push('</g><g id="m-units">');
    for (const u of B.units.values()) {
      if (u.lat == null || u.lon == null || !isFinite(u.lat) || !isFinite(u.lon) || u.status === 'off_duty') continue;
      const [x, y] = project(u.lat, u.lon);
      const stale = B.isStale(u);
      parts.push('<g class="m-unit' + (stale ? ' stale' : '') + '" data-testid="map-unit" data-unit="' + Q.esc(u.id) + '" data-status="' + Q.esc(u.status) +
        '"' + (stale ? ' data-stale="1"' : '') + ' transform="translate(' + x.toFixed(1) + ',' + y.toFixed(1) + ')"><circle r="6" class="st-' + Q.esc(u.status) +
        '" stroke="#0b1218" stroke-width="1.5"/>' +
        '<text x="8" y="4" font-size="10" fill="#cfd9e3">' + Q.esc(shortUnit(u)) + '</text><title>' + Q.esc((u.name || u.id) + ' · ' +
        Q.pick(Q.STATUSES[u.status], u.status) + (stale ? ' · ' + Q.t('badge_stale') : '') + (u.reason ? ' · ' + u.reason : '')) + '</title></g>');
    }
    parts.push('</g>');
    svg.innerHTML = parts.join('');
  };

  M.renderLegend = function () {
    const covs = [[1, 'cov_1'], [3, 'cov_3'], [5, 'cov_5'], [0, 'cov_none']]
      .map(([lv, k]) => '<span><i style="background:' + COV_FILL[lv] + '"></i>' + Q.esc(Q.t(k)) + '</span>');
    const sts = ['available', 'assigned', 'en_route', 'on_scene', 'busy', 'out_of_service']
      .map((s) => '<span><i class="st-' + s + '" style="border-radius:50%"></i>' + Q.esc(Q.pick(Q.STATUSES[s])) + '</span>');
    $('legend').innerHTML = covs.join('') + sts.join('') + '<span><i style="background:#e5484d;transform:rotate(45deg)"></i>' + Q.esc(Q.t('incident')) + '</span>';
  };

  /** The next click on the map calls `cb([lat, lon])` instead of selecting. */
  M.pick = function (cb) {
    picking = cb;
    $('mapwrap').classList.add('picking');
    Q.toast('info', Q.t('pick_hint'));
  };

  M.wire = function (select) {
    $('map').addEventListener('click', (ev) => {
      if (picking && proj) {
        const svg = $('map');
        const r = svg.getBoundingClientRect();
        const cb = picking;
        picking = null;
        $('mapwrap').classList.remove('picking');
        cb(unproject((ev.clientX - r.left) * (proj.w / r.width), (ev.clientY - r.top) * (proj.h / r.height)));
        return;
      }
      const g = ev.target.closest('.m-incident');
      if (g) select(g.dataset.id);
    });
    window.addEventListener('resize', () => M.render(true));
  };

  B.onRender(() => M.render(false));
})();
