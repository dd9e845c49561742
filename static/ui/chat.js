// The WhatsApp chat inside Pipedrive (the person/deal panel and the floating window).
// Initialises Pipedrive's SDK at once, keeps the threads current by polling the page's API, and
// sends replies. Markup always comes rendered (and escaped) by the server: this script swaps
// rendered parts in and only ever puts message text into the page as text.
(function () {
  'use strict';

  var chat = document.getElementById('chat');
  if (!chat) return; // notice pages (refused token, errors) have nothing to run

  var PANEL_POLL_MS = 4000;
  var LIST_POLL_MS = 10000;
  var HIDDEN_POLL_MS = 30000;
  var TOKEN_REFRESH_MS = 4 * 60 * 1000; // GET_SIGNED_TOKEN tokens live 5 minutes
  var SDK_WAIT_MS = 9000; // Pipedrive hides the iframe after 10 s without initialisation

  var view = chat.dataset.view;
  var params = new URLSearchParams(location.search);
  var lib = window.PipedriveSdk;
  var sdk = null;
  // Outside Pipedrive (tests, a direct visit) the page keeps using the token it was loaded with.
  var token = params.get('token') || '';
  var tokenAt = Date.now();
  var stopped = false;

  function startSdk() {
    if (!lib || window.parent === window || !params.get('id')) return Promise.resolve(null);
    var candidate;
    try {
      candidate = new lib.AppExtensionsSDK();
    } catch (error) {
      console.warn('Pipedrive SDK unavailable:', error);
      return Promise.resolve(null);
    }
    var timeout = new Promise(function (_, reject) {
      setTimeout(function () { reject(new Error('no answer from Pipedrive')); }, SDK_WAIT_MS);
    });
    return Promise.race([candidate.initialize(), timeout]).then(
      function () { tokenAt = 0; return candidate; },
      function (error) { console.warn('Pipedrive SDK not initialised:', error); return null; }
    );
  }
  var ready = startSdk().then(function (s) { sdk = s; });

  function bearer() {
    if (!sdk || Date.now() - tokenAt < TOKEN_REFRESH_MS) return Promise.resolve(token);
    return sdk.execute(lib.Command.GET_SIGNED_TOKEN).then(function (answer) {
      if (answer && answer.token) {
        token = answer.token;
        tokenAt = Date.now();
      }
      return token;
    }, function (error) {
      console.warn('no fresh token from Pipedrive:', error);
      return token;
    });
  }

  function call(method, path, body) {
    return bearer().then(function (bearerToken) {
      return fetch(new URL('api/' + path, location.href).toString(), {
        method: method,
        headers: { Authorization: 'Bearer ' + bearerToken },
        body: body,
        cache: 'no-store',
        credentials: 'omit'
      });
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (data) {
        if (response.ok) return data;
        var message = data && data.data && data.data.message;
        var error = new Error(message || 'The request failed (HTTP ' + response.status + ')');
        error.status = response.status;
        throw error;
      });
    });
  }

  function fragment(html) {
    var template = document.createElement('template');
    template.innerHTML = html;
    return template.content;
  }

  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      var at = new Date(el.getAttribute('datetime'));
      if (!isNaN(at)) el.textContent = at.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
    });
  }

  function banner(text) {
    var el = chat.querySelector('.banner');
    if (!el) {
      el = document.createElement('p');
      el.className = 'banner';
      el.setAttribute('role', 'status');
      chat.prepend(el);
    }
    el.textContent = text;
  }

  function resize() {
    if (!sdk || view !== 'panel') return;
    var height = Math.min(750, Math.max(100, document.documentElement.scrollHeight));
    sdk.execute(lib.Command.RESIZE, { height: height }).catch(function () {});
  }

  var shownBadge = null;
  function badge(unseen) {
    if (!sdk || view !== 'floating' || unseen === shownBadge) return;
    shownBadge = unseen;
    sdk.execute(lib.Command.SET_NOTIFICATION, { number: unseen }).catch(function () { shownBadge = null; });
  }

  function markSeen(section) {
    if (section.dataset.seen !== 'false' || document.hidden) return Promise.resolve();
    section.dataset.seen = 'true';
    return call('POST', 'conversations/' + section.dataset.id + '/seen');
  }

  // --- templates (offered when the 24-hour window is closed) ---
  var templates = null;
  function loadTemplates() {
    if (!templates) {
      templates = call('GET', 'templates').then(function (data) { return data.templates; });
      templates.catch(function () { templates = null; });
    }
    return templates;
  }

  function offerTemplates(section) {
    if (!section.classList.contains('window-closed')) return;
    var select = section.querySelector('select[name="template"]');
    if (select.options.length > 1) return;
    loadTemplates().then(function (list) {
      list.forEach(function (t) {
        var option = document.createElement('option');
        option.value = t.id;
        option.textContent = t.name + ' (' + t.language + ')';
        select.appendChild(option);
      });
    }, function (error) { showError(section.querySelector('form.reply'), error.message); });
  }

  function showParams(select) {
    var box = select.closest('.template').querySelector('.params');
    box.replaceChildren();
    if (!templates || !select.value) return;
    templates.then(function (list) {
      var chosen = list.find(function (t) { return t.id === select.value; });
      if (!chosen) return;
      var preview = document.createElement('p');
      preview.className = 'preview';
      preview.textContent = chosen.body;
      box.appendChild(preview);
      chosen.placeholders.forEach(function (name) {
        var label = document.createElement('label');
        label.textContent = '{{' + name + '}} ';
        var input = document.createElement('input');
        input.name = 'param.' + name;
        input.required = true;
        label.appendChild(input);
        box.appendChild(label);
      });
    });
  }

  // --- threads ---
  function prepare(section) {
    localTimes(section);
    var list = section.querySelector('.messages');
    list.scrollTop = list.scrollHeight;
    offerTemplates(section);
  }

  function applyThread(container, thread) {
    var fresh = fragment(thread.html).querySelector('section.thread');
    var current = container.querySelector('section.thread[data-id="' + thread.id + '"]');
    if (!current) {
      container.appendChild(fresh);
      current = container.lastElementChild;
      prepare(current);
      return current;
    }
    var list = current.querySelector('.messages');
    var atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 24;
    current.className = fresh.className;
    current.dataset.seen = fresh.dataset.seen;
    current.querySelector('.thread-head').replaceWith(fresh.querySelector('.thread-head'));
    list.replaceChildren.apply(list, Array.prototype.slice.call(fresh.querySelector('.messages').childNodes));
    localTimes(current);
    if (atBottom) list.scrollTop = list.scrollHeight;
    offerTemplates(current);
    return current;
  }

  function showError(form, message) {
    var el = form.querySelector('.error');
    el.textContent = message;
    el.hidden = !message;
  }

  function send(form) {
    var section = form.closest('section.thread');
    var data = new FormData();
    if (section.classList.contains('window-closed')) {
      data.append('template', form.elements.template.value);
      form.querySelectorAll('.params input').forEach(function (input) { data.append(input.name, input.value); });
    } else {
      data.append('text', form.elements.text.value);
      Array.prototype.forEach.call(form.elements.file.files, function (file) { data.append('file', file, file.name); });
    }
    var button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    showError(form, '');
    return call('POST', 'conversations/' + section.dataset.id + '/messages', data).then(function () {
      form.reset();
      form.querySelector('.params').replaceChildren();
      return refresh();
    }).catch(function (error) {
      showError(form, error.message);
    }).then(function () {
      button.disabled = false;
    });
  }

  chat.addEventListener('submit', function (event) {
    var form = event.target.closest('form.reply');
    if (!form) return;
    event.preventDefault();
    send(form);
  });
  chat.addEventListener('keydown', function (event) {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && event.target.name === 'text') {
      event.preventDefault();
      event.target.form.requestSubmit();
    }
  });
  chat.addEventListener('change', function (event) {
    if (event.target.name === 'template') showParams(event.target);
  });

  // --- the panel: the threads of the person's numbers ---
  var version = chat.dataset.version || '';

  function refreshPanel() {
    var phones = chat.dataset.phones;
    if (!phones) return Promise.resolve();
    var query = 'threads?phones=' + encodeURIComponent(phones) + '&since=' + encodeURIComponent(version);
    return call('GET', query).then(function (data) {
      version = data.version;
      if (!data.changed) return;
      var container = chat.querySelector('.threads');
      data.threads.forEach(function (thread) { markSeen(applyThread(container, thread)); });
      chat.querySelector('.empty').hidden = data.threads.length > 0;
      resize();
    });
  }

  // --- the floating window: the inbox, one thread at a time ---
  var listVersion = chat.dataset.version || '';
  var openId = null;
  var threadVersion = '';

  function refreshList() {
    return call('GET', 'conversations?since=' + encodeURIComponent(listVersion)).then(function (data) {
      listVersion = data.version;
      badge(data.unseen);
      if (!data.changed) return;
      var list = chat.querySelector('.list');
      list.replaceChildren(fragment(data.inbox.html));
      localTimes(list);
    });
  }

  function refreshThread() {
    if (!openId) return Promise.resolve();
    var id = openId;
    return call('GET', 'conversations/' + id + '?since=' + encodeURIComponent(threadVersion)).then(function (data) {
      if (id !== openId) return;
      threadVersion = data.version;
      if (data.changed) return markSeen(applyThread(chat.querySelector('.open .threads'), data.thread));
    });
  }

  function openThread(id) {
    openId = id;
    threadVersion = '';
    chat.querySelector('.open .threads').replaceChildren();
    chat.querySelector('.list').hidden = true;
    chat.querySelector('.open').hidden = false;
    return refreshThread().then(refreshList);
  }

  chat.addEventListener('click', function (event) {
    var opener = event.target.closest('[data-open]');
    if (opener) {
      openThread(opener.dataset.open).catch(function (error) { banner(error.message); });
    } else if (event.target.closest('.back')) {
      openId = null;
      chat.querySelector('.open').hidden = true;
      chat.querySelector('.list').hidden = false;
    }
  });

  function refresh() {
    if (view === 'panel') return refreshPanel();
    return Promise.all([refreshList(), refreshThread()]);
  }

  function poll(interval) {
    setTimeout(function run() {
      if (stopped) return;
      refresh().catch(function (error) {
        if (error.status === 401) {
          stopped = true;
          banner('This view has expired. Reload the page in Pipedrive.');
        } else {
          console.warn('refresh failed:', error);
        }
      }).then(function () {
        if (!stopped) setTimeout(run, document.hidden ? HIDDEN_POLL_MS : interval);
      });
    }, interval);
  }

  localTimes(chat);
  chat.querySelectorAll('section.thread').forEach(prepare);
  ready.then(function () {
    resize();
    badge(Number(chat.dataset.unseen || 0));
    chat.querySelectorAll('section.thread').forEach(function (section) {
      markSeen(section).catch(function () {});
    });
  });
  poll(view === 'panel' ? PANEL_POLL_MS : LIST_POLL_MS);
})();
